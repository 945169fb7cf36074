"""Issue 21.6: `polchain --help`, `--version` and `status` answer without importing torch (it took
10-12 s on a fresh machine for a 0.09 s call). Checked in a fresh interpreter, by what it imported."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.nodeproc import free_port

PROBE = """
import sys
from node.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print("torch imported" if "torch" in sys.modules else "no torch", rc)
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["status", "--help"], ["bench", "--help"],
                                  ["pol", "--help"], ["status", "--node", "DEAD"]])
def test_light_commands_do_not_import_torch(argv):
    argv = [a.replace("DEAD", f"http://127.0.0.1:{free_port()}") for a in argv]
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("no torch"), (argv, last, r.stderr[-2000:])
    expected_rc = "1" if argv[0] == "status" and argv[1] == "--node" else "0"
    assert last.split()[-1] == expected_rc, (argv, r.stdout[-500:], r.stderr[-500:])
