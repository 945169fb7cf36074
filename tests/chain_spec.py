"""The chain the tests build and their nodes run: ``tiny-test``.

It is the ``tiny`` preset with the difficulty tiny had before issue 33.5 -- k0 = 8 and one step
per window -- so a test block costs what it always did (about 300 candidates, ~1 s of one core),
while the preset itself starts near its 10 s target on a loopback testnet (k0 = 10, steps of up to
2; docs/protocol.md section 7). Everything else (model, data, training, E, tickets, epochs) is
tiny's. The preset's own start is checked by tests/consensus/test_difficulty.py and measured by
`polchain bench orphans`; tests of the presets themselves (known answers, the README's commands,
the cross-kernel matrix) keep ``preset("tiny")``.

Nodes take it as a genesis document: ``NodeProc(datadir, *TINY_TEST_ARGS, ...)``. The file
``tests/tiny-test.spec.json`` is committed (a test reads it back and compares it with
``TINY_TEST``; ``python -m tests.chain_spec`` rewrites it).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from consensus.spec import preset

_TINY = preset("tiny")
TINY_TEST = dataclasses.replace(_TINY, name="tiny-test",
                                difficulty=dataclasses.replace(_TINY.difficulty, initial=8, max_step=1))
TINY_TEST_FILE = Path(__file__).with_name("tiny-test.spec.json")
TINY_TEST_ARGS = ("--spec", str(TINY_TEST_FILE))


if __name__ == "__main__":
    TINY_TEST_FILE.write_text(TINY_TEST.to_json() + "\n")
    print(f"wrote {TINY_TEST_FILE} (chain id {TINY_TEST.chain_id})")
