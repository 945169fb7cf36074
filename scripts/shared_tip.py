"""One poll of a testnet's nodes (scripts/compose-e2e.sh, scripts/swarm-e2e.sh), standard library only.

Usage: python3 scripts/shared_tip.py HEIGHT URL...
Prints "OK <height> <tip>" once every node answers /status on the same tip at height >= HEIGHT, else a
progress line with each node's height ("-" for no answer) and the nodes' summed mining rate.
"""
import json
import sys
import urllib.request


def main(argv: list[str]) -> int:
    need, urls = int(argv[0]), argv[1:]
    st = []
    for u in urls:
        try:
            with urllib.request.urlopen(u + "/status", timeout=3) as r:
                st.append(json.loads(r.read()))
        except Exception:
            st.append(None)
    if all(st) and len({s["tip"] for s in st}) == 1 and st[0]["height"] >= need:
        print(f"OK {st[0]['height']} {st[0]['tip']}")
        return 0
    hs = "/".join(str(s["height"]) if s else "-" for s in st)
    aps = sum(s["mining"]["attempts_per_second"] for s in st if s)
    print(f"heights {hs}, {aps:.0f} attempts/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
