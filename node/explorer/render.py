"""HTML for the explorer's pages, from the REST API's JSON objects (status, blocks, tips, certificates).

Every value is escaped; header fields are shown generically (whatever the header JSON holds), with
links for the fields every header version has (parent, miner).
"""
from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path
from string import Template

from .chart import Point, difficulty_chart, learning_curve

_LAYOUT = Template((Path(__file__).parent / "templates" / "layout.html").read_text())


def page(title: str, body: str, status: dict, *, refresh: float = 2.0) -> str:
    from node import __version__
    return _LAYOUT.substitute(title=escape(title), body=body, refresh=refresh, version=escape(__version__),
                              chain_name=escape(status.get("preset", "")), chain_id=escape(status.get("chain_id", "")),
                              chain_short=escape(status.get("chain_id", "")[:16]))


# -- small pieces ------------------------------------------------------------------------------
def short(h: str | None, n: int = 12) -> str:
    return escape(h[:n]) + "…" if h and len(h) > n else escape(h or "")


def block_link(h: str, label: str | None = None) -> str:
    return f'<a class="mono" href="/explorer/blocks/{escape(h)}" title="{escape(h)}">{label or short(h)}</a>'


def miner_link(key: str) -> str:
    if not key:
        return '<span class="muted">genesis</span>'
    return f'<a class="mono" href="/explorer/miners/{escape(key)}" title="{escape(key)}">{short(key, 10)}</a>'


def utc(ms: int | float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms else ""


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def accuracy_of(block: dict) -> float | None:
    """The share of E that the block's post-step model gets right (measured if known, else claimed)."""
    acc = block.get("accuracy") or {}
    correct = acc.get("measured_after")
    if correct is None:
        correct = block["header"].get("acc_after")
    of = acc.get("of")
    return correct / of if correct is not None and of else None


def steps_of(header: dict) -> int:
    """Training steps the block's proof replays: its nonces (v3), one step for a dgg-paper (v1) header."""
    return len(header["nonces"]) if isinstance(header.get("nonces"), list) else 1


def card(label: str, value: str, sub: str = "", ident: str = "") -> str:
    idattr = f' id="{ident}"' if ident else ""
    return (f'<div class="card"><div class="label">{escape(label)}</div><div class="value"{idattr}>{value}</div>'
            f'<div class="sub">{sub}</div></div>')


def interval_of(block: dict, parent: dict | None) -> float | None:
    """Seconds between a block and its parent (none after genesis, whose timestamp is the spec's)."""
    if parent is None or parent["height"] == 0 or parent["hash"] != block["header"].get("parent"):
        return None
    return (block["header"]["timestamp_ms"] - parent["header"]["timestamp_ms"]) / 1000


def points(blocks_oldest_first: list[dict]) -> list[Point]:
    out, prev = [], None
    for b in blocks_oldest_first:
        out.append(Point(b["height"], b["hash"], accuracy_of(b), interval_of(b, prev), b["header"].get("difficulty", 0)))
        prev = b
    return out


def mining_rate(blocks_newest_first: list[dict]) -> float | None:
    """Blocks per minute over the listed blocks (genesis excluded)."""
    bs = [b for b in blocks_newest_first if b["height"] > 0]
    if len(bs) < 2:
        return None
    span = (bs[0]["header"]["timestamp_ms"] - bs[-1]["header"]["timestamp_ms"]) / 1000
    return (len(bs) - 1) / span * 60 if span > 0 else None


# -- the overview -------------------------------------------------------------------------------
def state_banner(st: dict) -> str:
    sync = st.get("sync") or {}
    if st.get("syncing"):
        return (f'<div class="banner warn" id="state-syncing">Syncing: height {sync.get("height", st["height"])} of '
                f'{escape(str(sync.get("target", "?")))} from {escape(str(sync.get("peer") or "a peer"))}. '
                'The figures below grow as blocks arrive.</div>')
    if st["height"] == 0:
        mining = st.get("mining") or {}
        if mining.get("enabled"):
            return ('<div class="banner info" id="state-empty">No blocks yet: this chain is at its genesis block, '
                    'and this node is mining block 1 (its progress is under "Current block" below). Blocks appear '
                    'here as soon as a miner finds one.</div>')
        return ('<div class="banner info" id="state-empty">No blocks yet: this chain is at its genesis block. '
                'Blocks appear here as soon as a miner finds one (start one with <code>polchain node --mine</code>).'
                '</div>')
    return ""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(0.0, float(seconds))
    if s < 120:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    return f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def current_block(st: dict) -> str:
    """The miner's search on the current tip, as one strip: attempts against the ~2^k expected, time so
    far, R hits held back (and why), and the expected time per block at this node's rate."""
    mining = st.get("mining") or {}
    if not mining.get("enabled"):
        return ""
    cur = mining.get("current")
    if not cur:
        return ('<div class="current" id="current-block"><span class="label">Current block</span>'
                '<span class="muted">the miner is starting</span></div>')
    rate = mining.get("attempts_per_second") or 0.0
    expected = cur.get("expected_attempts") or 0
    attempts = cur.get("attempts", 0)
    share = attempts / expected if expected else 0.0
    held = cur.get("r_hits", 0)
    eta = (f"about {duration(expected / rate)} per block at {rate:.1f} attempts/s" if rate > 0
           else "no rate yet")
    why = (f' ({cur.get("acc_floor_failed", 0)} below the accuracy floor, {cur.get("acc_borderline_failed", 0)} '
           'borderline)' if held else "")
    borderline = ("borderline: more predictions near a tie than the claim tolerance, which other machines' "
                  "fp32 evaluation could count otherwise")
    items = [
        f'<span class="label">Current block</span><b>height {cur.get("height")} at k={cur.get("difficulty")}</b>',
        f'<span id="current-attempts">{attempts:,}</span> of about 2^{cur.get("difficulty")} = {expected:,} '
        f'expected ({share * 100:.0f}%)<span class="progress"><span style="width:{min(share, 1.0) * 100:.1f}%">'
        '</span></span>',
        f'{duration(cur.get("seconds"))} on it',
        f'<span title="{escape(borderline)}">R hits held back: <span id="current-held">{held}</span>{why}</span>',
        escape(eta),
    ]
    if cur.get("restarts"):
        items.append(f'{cur["restarts"]} restart{"s" if cur["restarts"] != 1 else ""}')
    return '<div class="current" id="current-block">' + "".join(f"<span>{i}</span>" for i in items) + "</div>"


def overview_live(st: dict, recent: list[dict], chart_blocks: list[dict], miners: list[tuple[str, int]]) -> str:
    """The part of the overview that the page refreshes in place."""
    acc = st.get("tip_accuracy") or {}
    mining = st.get("mining") or {}
    rate = mining_rate(recent)
    sync = st.get("sync") or {}
    if st.get("syncing"):
        sync_text = "syncing"
    elif st.get("peers", 0) == 0:
        sync_text = "no peer reachable" if st.get("peers_known") else "alone: no peers"
    else:
        sync_text = ("in sync" if (sync.get("best_peer_height") or 0) <= st["height"]
                     else f'behind (peer at {sync["best_peer_height"]})')
    mine_sub = (f'this node: {mining.get("attempts_per_second", 0):.1f} attempts/s' if mining.get("enabled")
                else "this node does not mine")
    cur = mining.get("current") or {}
    if cur:
        mine_sub += f', {cur.get("attempts", 0):,} on this block'
    cards = "".join([
        card("tip height", str(st["height"]), block_link(st["tip"], short(st["tip"], 20)), "tip-height"),
        card("last block", ago(st.get("last_block_age_s")), f'cumulative work {st.get("cumulative_work", 0):,}'),
        card("sync", sync_text, f'best peer height {sync.get("best_peer_height") or "—"}', "sync-state"),
        card("peers", str(st.get("peers", 0)), '<a href="/peers">/peers</a>'),
        card("mining rate", f"{rate:.1f}/min" if rate is not None else "—", mine_sub),
        card("difficulty k", str(st.get("difficulty", "")), "next block: about 2^k attempts", "difficulty"),
        card("accuracy on E", f'{100 * acc.get("correct", 0) / (acc.get("of") or 1):.1f}%',
             f'{acc.get("correct", "?")}/{acc.get("of", "?")} (tip model)'),
    ])
    pts = points(chart_blocks)
    charts = (
        '<div class="charts"><div class="chart"><h2>Learning curve</h2>'
        f'<div class="legend">accuracy of each block\'s model on E (line, left axis) and the time since its '
        f'parent (bars, right axis); heights {pts[0].height if pts else 0}–{pts[-1].height if pts else 0}</div>'
        f'{learning_curve(pts)}</div>'
        f'<div class="chart"><h2>Difficulty</h2><div class="legend">k by height</div>{difficulty_chart(pts)}</div></div>')
    return (state_banner(st) + f'<div class="cards">{cards}</div>' + current_block(st) + charts +
            "<h2>Latest blocks</h2>" + blocks_table(recent, chart_blocks[-len(recent) - 1:]) + "<h2>Miners (latest blocks)</h2>" + miners_table(miners))


def blocks_table(blocks: list[dict], context: list[dict] = ()) -> str:
    """Rows for ``blocks``; ``context``: more blocks (e.g. the oldest row's parent) for the intervals."""
    if not blocks:
        return '<div class="empty">no blocks</div>'
    rows = []
    by_hash = {b["hash"]: b for b in [*context, *blocks]}
    for b in blocks:
        hd = b["header"]
        iv = interval_of(b, by_hash.get(hd.get("parent", "")))
        interval = f"{iv:.1f}" if iv is not None else ""
        claims = f'{hd["acc_before"]}→{hd.get("acc_after")}' if "acc_before" in hd else str(hd.get("acc_after", ""))
        rows.append(f'<tr data-height="{b["height"]}"><td class="num">{b["height"]}</td><td>{block_link(b["hash"])}</td>'
                    f'<td>{miner_link(hd.get("miner", ""))}</td><td class="num">{hd.get("difficulty", "")}</td>'
                    f'<td class="num">{interval}</td><td class="num">{escape(claims)}</td>'
                    f'<td class="num">{steps_of(hd) if b["height"] else ""}</td><td class="num">{len(b.get("records") or [])}</td>'
                    f'<td>{utc(hd.get("timestamp_ms"))}</td></tr>')
    return ('<table id="blocks"><thead><tr><th class="num">height</th><th>hash</th><th>miner</th><th class="num">k</th>'
            '<th class="num">interval s</th><th class="num">accuracy claim</th><th class="num">steps</th>'
            '<th class="num">records</th><th>time</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def miners_table(miners: list[tuple[str, int]]) -> str:
    total = sum(n for _, n in miners)
    if not total:
        return '<div class="empty">no mined blocks yet</div>'
    rows = "".join(f'<tr><td>{miner_link(k)}</td><td class="num">{n}</td><td class="num">{100 * n / total:.0f}%</td></tr>'
                   for k, n in miners)
    return ('<table id="miners"><thead><tr><th>miner</th><th class="num">blocks</th><th class="num">share</th>'
            f'</tr></thead><tbody>{rows}</tbody></table>')


# -- one block -----------------------------------------------------------------------------------
def _field(name: str, value) -> str:
    if name == "parent" and isinstance(value, str):
        return block_link(value, escape(value))
    if name == "miner" and isinstance(value, str):
        return f'<a class="mono" href="/explorer/miners/{escape(value)}">{escape(value)}</a>' if value else "genesis"
    if name == "timestamp_ms":
        return f"{value} ({utc(value)})"
    if isinstance(value, list):
        text = escape(json.dumps(value))
        return f"<details><summary>{len(value)} values</summary><code>{text}</code></details>" if len(value) > 8 else \
            f"<code>{text}</code>"
    return f'<span class="mono">{escape(str(value))}</span>'


def block_page(b: dict, child: dict | None, proof_html: str = "") -> str:
    hd = b["header"]
    header_rows = "".join(f'<tr><th class="mono">{escape(k)}</th><td>{_field(k, v)}</td></tr>' for k, v in hd.items())
    return (f'<h1>Block {b["height"]}</h1><div id="live" data-live="/explorer/blocks/{escape(b["hash"])}?part=live">'
            f'{block_facts(b, child)}</div>{proof_html}'
            f'<h2>Header</h2><table id="header-fields">{header_rows}</table>'
            f'<h2>Records ({len(b.get("records") or [])})</h2>{records_table(b.get("records") or [])}')


def block_facts(b: dict, child: dict | None) -> str:
    """The part of a block page that changes: its status (validating, then valid or invalid), whether
    it is on the best chain, its child."""
    acc = b.get("accuracy") or {}
    status_cls = "status-" + escape(b.get("status", ""))
    verdict = escape(b.get("status", "")) + (f' — {escape(b["reason"])}' if b.get("reason") else "")
    timing = (f'{b["validation_seconds"]:.3f} s on this node' if b.get("validation_seconds") is not None
              else "not measured by this node since it started (synced earlier, or header only)")
    facts = [
        ("hash", f'<span class="mono">{escape(b["hash"])}</span>'),
        ("outcome", f'<span class="{status_cls}" id="block-status">{verdict}</span>'
                    + (" · best chain" if b.get("in_best_chain") else " · not on the best chain")),
        ("validation time", escape(timing)),
        ("accuracy on E", escape(" · ".join(f"{k.replace('_', ' ')} {v}" for k, v in acc.items() if v is not None))),
        ("cumulative work", f'{b.get("cumulative_work", 0):,}'),
        ("received", f'{utc((b.get("received_at") or 0) * 1000)} from {escape(b.get("peer") or "this node")}'),
        ("next block", block_link(child["hash"]) if child else "none yet"),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    return f'<table id="block-facts">{rows}</table>'


def records_table(records: list[dict]) -> str:
    if not records:
        return '<div class="empty">no records in this block</div>'
    rows = []
    for r in records:
        mh = r.get("model_hash")
        link = (f'<a class="mono" href="/explorer/certificates?model_hash={escape(mh)}">{short(mh)}</a>'
                if isinstance(mh, str) else "")
        rows.append(f'<tr><td>{escape(str(r.get("type", "")))}</td><td>{link}</td><td>{miner_link(r.get("owner") or "")}'
                    f'</td><td><pre>{escape(json.dumps(r, indent=1, sort_keys=True))}</pre></td></tr>')
    return ('<table id="records"><thead><tr><th>type</th><th>model</th><th>owner</th><th>record</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


# -- miner, tips, certificates -----------------------------------------------------------------
def miner_page(key: str, mined: list[dict], scanned: list[dict]) -> str:
    return (f'<h1>Miner</h1><p class="mono">{escape(key)}</p><div id="live" '
            f'data-live="/explorer/miners/{escape(key)}?part=live">{miner_live(mined, scanned)}</div>')


def miner_live(mined: list[dict], scanned: list[dict]) -> str:
    """``scanned``: the latest blocks of the best chain (the parents of the mined ones among them)."""
    n = sum(1 for b in scanned if b["height"] > 0)
    share = f"{100 * len(mined) / n:.1f}%" if n else "—"
    return ('<div class="cards">' + card("blocks", str(len(mined)), f"of the latest {n} on the best chain", "miner-blocks")
            + card("share", share, "of those blocks") + "</div><h2>Blocks</h2>" + blocks_table(mined, scanned))


def tips_page(tips: list[dict], depth: int) -> str:
    return ('<h1>Chain tips</h1><p>The active tip first, then valid forks, branches known by headers only, and '
            f'invalid branches, within {depth} blocks of the tip (from <a href="/tips">/tips</a>; every tip: '
            '<a href="/tips?depth=0">/tips?depth=0</a>).</p>'
            f'<div id="live" data-live="/explorer/tips?part=live">{tips_table(tips)}</div>')


def tips_table(tips: list[dict]) -> str:
    rows = "".join(f'<tr><td class="status-{escape(t["status"])}">{escape(t["status"])}</td><td class="num">'
                   f'{t["height"]}</td><td>{block_link(t["hash"], escape(t["hash"]))}</td><td class="num">'
                   f'{t["cumulative_work"]:,}</td></tr>' for t in tips)
    return ('<table id="tips"><thead><tr><th>status</th><th class="num">height</th><th>hash</th>'
            f'<th class="num">work</th></tr></thead><tbody>{rows}</tbody></table>')


def certificates_page(model_hash: str, result: dict | None, problem: str = "") -> str:
    form = ('<h1>Model certificates</h1><form class="lookup" method="get" action="/explorer/certificates">'
            f'<input type="text" name="model_hash" placeholder="model hash (64 hex)" value="{escape(model_hash)}">'
            ' <button type="submit">look up</button></form>')
    if problem:
        return form + f'<div class="banner warn" id="cert-problem">{escape(problem)}</div>'
    if result is None:
        return form
    rows = []
    for c in result.get("certificates", []):
        rec = c["record"]
        rows.append(f'<tr><td class="num">{c["height"]}</td><td>{block_link(c["block"])}</td><td>'
                    f'{miner_link(rec.get("owner", ""))}</td><td class="mono">{short(rec.get("proof_root"), 16)}</td>'
                    f'<td>{escape(json.dumps(rec.get("metadata", {}), sort_keys=True))}</td>'
                    f'<td>{utc(rec.get("timestamp_ms"))}</td></tr>')
    for rec in result.get("pending", []):
        rows.append(f'<tr><td>pending</td><td></td><td>{miner_link(rec.get("owner", ""))}</td><td class="mono">'
                    f'{short(rec.get("proof_root"), 16)}</td><td>{escape(json.dumps(rec.get("metadata", {}), sort_keys=True))}'
                    f'</td><td>{utc(rec.get("timestamp_ms"))}</td></tr>')
    return form + ('<p>The first certificate on the chain is the original registration.</p><table id="certificates">'
                   '<thead><tr><th class="num">height</th><th>block</th><th>owner</th><th>proof root</th>'
                   f'<th>metadata</th><th>time</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


# -- the proof (GET /blocks/{hash}/proof) ------------------------------------------------------------
def _num(v: float | None, fmt: str = ".4e") -> str:
    return "—" if v is None else format(v, fmt)


def proof_section(p: dict | None, class_names: tuple[str, ...] = ()) -> str:
    """R, the achieved changes against the band, the steps with their batches, acc(W') against the floor."""
    if p is None:
        return ('<h2>Proof</h2><div class="empty" id="proof">the genesis block has no proof: its weights are '
                'the spec\'s initial model</div>')
    rp = p["replay"]
    band = p["band"]
    acc = p["accuracy"]
    out = ['<section id="proof"><h2>Proof</h2>']
    out.append(f'<p class="legend">R: k = {p["difficulty"]} requirements drawn from the parent\'s post-state '
               f'(seed <span class="mono">{short(p.get("r_seed"), 16)}</span>, redraw epoch '
               f'{p.get("redraw_epoch") if p.get("redraw_epoch") is not None else "—"}). Each must move in its '
               f'direction in the winning step by at least the validators\' band, max({band["ulps"]} ulp, '
               f'{band["abs"]:.1e}). <a href="/blocks/{escape(p["hash"])}/proof">JSON</a></p>')
    if rp["status"] != "done":
        out.append(f'<div class="banner warn" id="proof-replay">{escape(rp["detail"])}</div>')
    else:
        cls = "ok" if rp.get("state_matches") else "bad"
        out.append(f'<p class="legend" id="proof-replay">{escape(rp["detail"])}; post-state '
                   f'<span class="{cls}">{"matches" if rp.get("state_matches") else "does not match"}</span> the '
                   'header\'s state_hash.</p>')
    rows = []
    for r in p["requirements"]:
        arrow = "↑ increase" if r["direction"] == "increase" else "↓ decrease"
        met = "" if r["met"] is None else ('<span class="ok">✓ met</span>' if r["met"] else '<span class="bad">✗ not met</span>')
        rows.append(f'<tr data-index="{r["index"]}"><td class="num">{r["i"]}</td><td class="mono">{escape(r["parameter"])}'
                    f'[{r["offset"]}]</td><td class="num">{r["index"]}</td><td>{arrow}</td>'
                    f'<td class="num">{_num(r["before"], ".7g")}</td><td class="num">{_num(r["after"], ".7g")}</td>'
                    f'<td class="num change">{_num(r["change"], "+.3e")}</td><td class="num">{_num(r["least"], ".1e")}</td>'
                    f'<td>{met}</td></tr>')
    out.append('<h3>Requirements R and the winning step\'s changes</h3><table id="proof-requirements"><thead><tr>'
               '<th class="num">#</th><th>parameter</th><th class="num">flat index</th><th>direction</th>'
               '<th class="num">w</th><th class="num">w\'</th><th class="num">change</th><th class="num">band</th>'
               f'<th>verdict</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    srows = []
    for st in p["steps"]:
        role = "winning" if st["winning"] else "advance"
        names = ", ".join(escape(class_names[y]) if 0 <= y < len(class_names) else f"class {y}" for y in st["labels"])
        srows.append(f'<tr class="{role}" data-step="{st["step"]}"><td class="num">{st["step"]}</td><td>{role}</td>'
                     f'<td class="num mono">{st["nonce"]}</td><td class="mono">{escape(", ".join(map(str, st["batch"])))}</td>'
                     f'<td><img class="batch" loading="lazy" alt="batch of step {st["step"]}: {names}" title="{names}" '
                     f'src="/explorer/blocks/{escape(p["hash"])}/batch/{st["step"]}.png"><div class="sub">{names}</div>'
                     '</td></tr>')
    out.append(f'<h3>Steps ({len(p["steps"])}: {len(p["steps"]) - 1} advance, then the winning one)</h3>'
               '<p class="legend">W is the parent\'s post-state advanced by the advance steps; each nonce derives '
               'its batch of train images from the parent, the miner\'s key and the nonce.</p>'
               '<table id="proof-steps"><thead><tr><th class="num">step</th><th>role</th><th class="num">nonce</th>'
               f'<th>train indices</th><th>images</th></tr></thead><tbody>{"".join(srows)}</tbody></table>')
    measured, floor = acc.get("measured"), acc.get("floor")
    if measured is not None and floor is not None:
        verdict = (f'<span class="ok">{measured - floor:+d} above the floor</span>' if measured >= floor
                   else f'<span class="bad">{measured - floor:+d} below the floor</span>')
    else:
        verdict = "not measured by this node"
    floor_how = (f'the parent\'s claim {acc["parent_claim"]} {acc["min_improvement"]:+d}, relaxed by '
                 f'{acc["floor_relax"]} per redraw epoch' if acc.get("parent_claim") is not None else "")
    arows = [("acc(W') measured", f'<span id="proof-measured">{measured if measured is not None else "—"}</span>'
                                  f' of {acc["of"]}'),
             ("claimed", f'{acc["claimed"]} (within ±{acc["claim_tolerance"]} of the measurement)'),
             ("floor", f'<span id="proof-floor">{floor if floor is not None else "—"}</span> ({floor_how})'),
             ("verdict", verdict)]
    out.append('<h3>Accuracy of W\' on E against the floor</h3><table id="proof-accuracy">'
               + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in arows) + "</table></section>")
    return "".join(out)


def search_not_found(query: str, why: str, matches: list[dict] = ()) -> str:
    body = f'<h1>Search</h1><div class="banner warn" id="search-result">{escape(why)}</div>'
    if matches:
        body += "<h2>Matching blocks</h2>" + blocks_table(list(matches))
    return body
