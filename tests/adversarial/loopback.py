"""Attackers on loopback addresses of their own (127.x.y.z), against a real node (tests/nodeproc.py).

Each /24 of 127/8 is a network for the validation lanes (node/admission.py keys them by
``network_prefix``); bans and rate limits treat loopback as an operator's own machines (per address,
never a whole network), which these tests do not rely on.

* ``client_from(ip, url)``: an httpx client whose connections come from ``ip``;
* ``post(client, header, records)``: ``POST /blocks`` of a block (multipart, as the CLI sends it);
* ``post_until_judged(client, header, records)``: the same, again after each 503 ``busy``, counting
  the tries and the give-ways;
* ``peers_on(node, ips)``: one-route peers (``tests/p2p/util.py`` ``FakePeer``, ``GET /status``
  answering the node's chain id, ``POST /blocks`` 202), one per address, introduced to the node until each is a connected
  peer.
"""
from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass

import httpx

from consensus.block import BlockHeader
from tests.nodeproc import NodeProc, patient, wait_for
from tests.p2p.util import FakePeer


def client_from(ip: str, url: str, timeout: float = 120) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=timeout, transport=httpx.HTTPTransport(local_address=ip))


def post(c: httpx.Client, header: BlockHeader, records: list | None = None) -> httpx.Response:
    return c.post("/blocks", files={"header": (None, header.encode()),
                                    "records": (None, json.dumps(records or []))})


def announce(c: httpx.Client, header: BlockHeader, origin: str) -> httpx.Response:
    """A peer's announcement: the header alone, naming where to fetch the block."""
    return c.post("/blocks", content=header.encode(),
                  headers={"content-type": "application/json", "x-polchain-origin": origin})


@dataclass
class Judged:
    response: httpx.Response
    tries: int             # POSTs until the node judged the block (1: at once)
    gave_way: int          # 503s whose replay stopped for another block ("gave way ...")
    seconds: float         # from the first try to the verdict


def post_until_judged(c: httpx.Client, header: BlockHeader, records: list | None = None, *,
                      pause: float = 0.2, max_tries: int = 1000, limit_s: float = 120) -> Judged:
    """POST until the answer is not 503 ``busy`` (``pause`` seconds between tries), at most ``max_tries``
    times."""
    t0 = time.perf_counter()
    tries = gave_way = 0
    deadline = t0 + patient(limit_s)
    while True:
        r = post(c, header, records)
        tries += 1
        if r.status_code != 503 or tries >= max_tries or time.perf_counter() > deadline:
            return Judged(r, tries, gave_way, time.perf_counter() - t0)
        if r.json().get("detail", "").startswith("gave way"):
            gave_way += 1
        time.sleep(pause)


def status_doc(node: NodeProc) -> dict:
    st = node.status()
    return {"chain_id": st["chain_id"], "height": 0, "cumulative_work": 0, "tip": st["tip"]}


def peers_on(node: NodeProc, ips: list[str], stack: ExitStack) -> list[FakePeer]:
    """A FakePeer on each address, each introduced by a POST /peers from its own address, then waited
    for until the node lists it as connected (its handshake passed)."""
    doc = status_doc(node)
    fakes = []
    for ip in ips:
        fake = stack.enter_context(FakePeer(host=ip))
        fake.serve_json("/status", doc)
        fake.serve_json("/peers", [])
        fake.serve_json("/blocks", {"status": "ignored"}, status=202)    # takes announcements: stays connected
        fakes.append(fake)
        with client_from(ip, node.url) as c:
            r = c.post("/peers", json={"url": fake.url})
            assert r.status_code == 202, r.text
    want = {f.url for f in fakes}
    wait_for(lambda: want <= {p["url"] for p in node.peers() if p["state"] == "connected"}, timeout=60,
             what="the fake peers connected")
    return fakes
