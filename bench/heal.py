"""Heal time after a partition of a line of nodes (issue 20.2): ``python -m bench.heal``.

N real `polchain node` processes (tiny preset, ``--threads 1``, discovery off) in a line n1 - n2 - ... - nN,
the ends mining, with the link in the middle withheld: two sides mine their own branch from genesis for
``--partition`` seconds. Then the link is made (POST /peers both ways) and, for every node, the time until
its best chain holds the winning side's pre-heal tip is read by polling (``hops``: its distance from the
link), as is the time until all nodes show one tip. Prints one JSON object; the figures are in docs/p2p.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from .propagate import Node, stop_all


def on_branch(node: Node, height: int, tip: str) -> bool:
    r = node.get(f"/blocks/{height}", timeout=30)
    return r.status_code == 200 and r.json()["hash"] == tip


def run(args) -> dict:
    import httpx
    n = max(4, args.nodes)
    cut = n // 2                       # the link n{cut} - n{cut+1} is the partition
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="polchain-heal-"))
    root.mkdir(parents=True, exist_ok=True)
    nodes: list[Node] = []
    try:
        for i in range(n):
            peers = ["--peer", nodes[-1].url] if nodes and i != cut else []
            mine = ["--mine"] if i in (0, n - 1) else []
            nodes.append(Node(f"n{i + 1}", root / f"n{i + 1}", ["--preset", "tiny"], "--no-discover", *mine, *peers))
        for node in nodes:          # one after the other: a --peer must be up when its node first polls
            node.start()
            node.wait_ready()
        t_start = time.monotonic()
        time.sleep(args.partition)
        left, right = nodes[cut - 1].status(), nodes[cut].status()
        pre = {"left": (left["height"], left["tip"]), "right": (right["height"], right["tip"])}
        t_heal = time.monotonic()
        for a, b in ((nodes[cut - 1], nodes[cut]), (nodes[cut], nodes[cut - 1])):
            httpx.post(a.url + "/peers", json={"url": b.url}, timeout=30).raise_for_status()
        reached: dict[str, dict[str, float]] = {"left": {}, "right": {}}
        one_tip = None
        deadline = t_heal + args.timeout
        while time.monotonic() < deadline:
            for node in nodes:
                for side, (h, tip) in pre.items():
                    if node.name not in reached[side]:
                        try:
                            if on_branch(node, h, tip):
                                reached[side][node.name] = round(time.monotonic() - t_heal, 2)
                        except httpx.HTTPError:
                            pass
            winner = next((s for s in reached if len(reached[s]) == n), None)
            if one_tip is None:
                try:
                    if len({node.status()["tip"] for node in nodes}) == 1:
                        one_tip = round(time.monotonic() - t_heal, 2)
                except httpx.HTTPError:
                    pass
            if winner and one_tip is not None:
                break
            time.sleep(0.25)
        winner = next((s for s in reached if len(reached[s]) == n), None)
        loser_nodes = nodes[cut:] if winner == "left" else list(reversed(nodes[:cut]))
        return {"nodes": n, "partition_s": args.partition, "since_start_s": round(t_heal - t_start, 1),
                "pre_heal": {s: {"height": h, "tip": t[:16]} for s, (h, t) in pre.items()}, "winner": winner,
                "on_winning_branch_s": {node.name: reached.get(winner, {}).get(node.name) for node in nodes}
                if winner else None,
                "losing_side_by_hops": [(i + 1, node.name, reached.get(winner, {}).get(node.name) if winner else None)
                                        for i, node in enumerate(loser_nodes)],
                "one_tip_s": one_tip, "work_dir": str(root)}
    finally:
        stop_all(nodes)
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--partition", type=float, default=60.0, help="seconds both sides mine apart")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up this long after the heal")
    ap.add_argument("--work-dir", type=Path, default=None)
    print(json.dumps(run(ap.parse_args()), indent=1))


if __name__ == "__main__":
    main()
