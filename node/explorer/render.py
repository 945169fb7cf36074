"""HTML for the explorer's pages, from the REST API's JSON objects (status, blocks, tips, certificates).

Every value is escaped; header fields are shown generically (whatever the header JSON holds), with
links for the fields every header version has (parent, miner).
"""
from __future__ import annotations

import csv
import io
import json
import statistics
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


def card(label: str, value: str, sub: str = "", ident: str = "", title: str = "") -> str:
    idattr = f' id="{ident}"' if ident else ""
    tip = f' title="{escape(title)}"' if title else ""
    return (f'<div class="card"{tip}><div class="label">{escape(label)}</div><div class="value"{idattr}>{value}</div>'
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


def block_times(blocks: list[dict], context: list[dict] = ()) -> dict | None:
    """The median and mean of the intervals between ``blocks`` and their parents (found among ``blocks``
    and ``context``): the "interval s" column of ``blocks_table(blocks, context)``, from the blocks'
    timestamps. What the chain did, not this node's attempt rate times 2^k (which left out the hits the
    accuracy check holds back, and other miners). None without an interval (block 1's parent is genesis,
    whose timestamp is the spec's)."""
    by_hash = {b["hash"]: b for b in [*context, *blocks]}
    found = [(b["height"], iv) for b in blocks
             if (iv := interval_of(b, by_hash.get(b["header"].get("parent", "")))) is not None]
    if not found:
        return None
    ivs = [iv for _, iv in found]
    return {"median_s": statistics.median(ivs), "mean_s": statistics.fmean(ivs), "intervals": len(ivs),
            "first": min(h for h, _ in found), "last": max(h for h, _ in found)}


def useful_work(blocks: list[dict]) -> dict | None:
    """The training steps the blocks carry (each block's nonces: its advance steps and the winning one)
    against the candidate steps their difficulty makes a miner expect: sum of 2^k, each block's
    expected attempts to meet R (docs/protocol.md: work = 2^k). An estimate from difficulty, not a count
    of attempts (blocks do not record those); the accuracy check holds some hits back, so miners make
    more attempts than 2^k and the true fraction is lower. None before block 1."""
    mined = [b for b in blocks if b["height"] > 0]
    if not mined:
        return None
    steps = sum(steps_of(b["header"]) for b in mined)
    expected = sum(1 << int(b["header"].get("difficulty", 0)) for b in mined)
    return {"steps": steps, "expected": expected, "fraction": steps / expected, "blocks": len(mined),
            "first": min(b["height"] for b in mined), "last": max(b["height"] for b in mined)}


CURVE_COLUMNS = ("height", "hash", "timestamp_ms", "interval_s", "difficulty", "steps", "claimed_correct",
                 "measured_correct", "of", "accuracy")


def curve_rows(blocks_oldest_first: list[dict]) -> list[dict]:
    """The learning curve as data (the chart's points; GET /explorer/learning-curve.csv and .json): per
    block its height, hash, timestamp, seconds since its parent (none for block 1 and genesis), k, steps,
    correct predictions on E claimed in the header and measured by this node (None if it has not
    replayed the block), the size of E, and the accuracy the chart draws (measured, else claimed)."""
    out, prev = [], None
    for b in blocks_oldest_first:
        hd, acc = b["header"], b.get("accuracy") or {}
        a = accuracy_of(b)
        out.append({"height": b["height"], "hash": b["hash"], "timestamp_ms": hd.get("timestamp_ms"),
                    "interval_s": interval_of(b, prev), "difficulty": hd.get("difficulty"),
                    "steps": steps_of(hd) if b["height"] else 0, "claimed_correct": hd.get("acc_after"),
                    "measured_correct": acc.get("measured_after"), "of": acc.get("of"),
                    "accuracy": round(a, 6) if a is not None else None})
        prev = b
    return out


def curve_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CURVE_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in CURVE_COLUMNS])
    return buf.getvalue()


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


def held_back(cur: dict) -> str:
    """The R hits on this tip, all of them accounted for: held back by the accuracy check (below the
    floor, borderline) and passed (the block being published: the search ends once it is stored)."""
    hits, floor, border = cur.get("r_hits", 0), cur.get("acc_floor_failed", 0), cur.get("acc_borderline_failed", 0)
    if not hits:
        return "R not met yet"
    held, passed = floor + border, max(0, hits - floor - border)
    text = (f'R met {hits} time{"s" if hits != 1 else ""}: <span id="current-held">{held}</span> held back '
            f'({floor} below the accuracy floor, {border} borderline)')
    return text + (f", {passed} passed (the block being published)" if passed else "")


def current_block(st: dict) -> str:
    """The miner's search on the current tip, as one strip: attempts as a multiple of 2^k (the attempts
    expected to meet R once), time so far, this node's attempt rate, the R hits and what became of them."""
    mining = st.get("mining") or {}
    if not mining.get("enabled"):
        return ""
    cur = mining.get("current")
    if not cur:
        return ('<div class="current" id="current-block"><span class="label">Current block</span>'
                '<span class="muted">the miner is starting</span></div>')
    rate = mining.get("attempts_per_second") or 0.0
    k = cur.get("difficulty")
    expected = cur.get("expected_attempts") or 0
    attempts = cur.get("attempts", 0)
    times = f" = {attempts / expected:.1f} × 2^{k}" if expected else ""
    expect_why = (f"2^{k} = {expected:,}: the attempts expected to meet R once. The accuracy check then holds "
                  "some hits back, so a block takes more attempts than that.")
    borderline = ("borderline: more predictions near a tie than the claim tolerance, which other machines' "
                  "fp32 evaluation could count otherwise")
    items = [
        f'<span class="label">Current block</span><b>height {cur.get("height")} at k={k}</b>',
        f'<span title="{escape(expect_why)}"><span id="current-attempts">{attempts:,}</span> attempts{times}</span>',
        f'{duration(cur.get("seconds"))} on it',
        f'{rate:.1f} attempts/s on this node',
        f'<span title="{escape(borderline)}">{held_back(cur)}</span>',
    ]
    if cur.get("restarts"):
        items.append(f'{cur["restarts"]} restart{"s" if cur["restarts"] != 1 else ""}')
    return '<div class="current" id="current-block">' + "".join(f"<span>{i}</span>" for i in items) + "</div>"


def network_card(st: dict) -> str:
    sync = st.get("sync") or {}
    peers, known = st.get("peers", 0), st.get("peers_known", 0)
    best = sync.get("best_peer_height")
    link = '<a href="/peers">/peers</a>'
    if st.get("syncing"):
        value = "syncing"
        sub = f'height {sync.get("height", st["height"])} of {escape(str(sync.get("target", "?")))} · {link}'
    elif peers == 0:
        value = "unreachable" if known else "alone"
        sub = (f"{known} peer{'s' if known != 1 else ''} known, none connected" if known else "no peers known") \
            + f" · {link}"
    else:
        value = "in sync" if (best or 0) <= st["height"] else "behind"
        sub = f"{peers} peer{'s' if peers != 1 else ''}, best at height {best if best is not None else '—'} · {link}"
    return card("network", value, sub, "sync-state")


def tip_accuracy(st: dict, tip: dict | None) -> tuple[int | None, int, str]:
    """The tip's correct predictions on E, the size of E and where the count comes from: measured by
    this node if it replayed the tip (as the chart and the table show it), else the header's claim."""
    if tip is not None and tip["hash"] == st.get("tip"):
        acc = tip.get("accuracy") or {}
        if acc.get("measured_after") is not None:
            return acc["measured_after"], acc.get("of") or 0, "measured by this node"
    acc = st.get("tip_accuracy") or {}
    return acc.get("correct"), acc.get("of") or 0, "claimed in the tip's header"


def overview_live(st: dict, recent: list[dict], chart_blocks: list[dict], miners: list[tuple[str, int]],
                  miners_of: int | None = None) -> str:
    """The part of the overview that the page refreshes in place. Every figure on it comes from data
    the page shows or links (the table, /status, /blocks, the learning-curve download)."""
    context = chart_blocks[-len(recent) - 1:]
    bt = block_times(recent, context)
    uw = useful_work(chart_blocks)
    correct, of, source = tip_accuracy(st, chart_blocks[-1] if chart_blocks else None)
    k = st.get("difficulty", 0)
    tip_sub = (f'{block_link(st["tip"])} · mined {ago(st.get("last_block_age_s"))}' if st["height"] > 0
               else block_link(st["tip"]))
    bt_sub = (f'median of the {bt["intervals"]} interval{"s" if bt["intervals"] != 1 else ""} in the table '
              f'below (blocks {bt["first"]}–{bt["last"]}; mean {duration(bt["mean_s"])})' if bt
              else "no interval yet (block 1's parent is genesis)")
    uw_title = ("An estimate from difficulty: the training steps the blocks carry (each block's nonces: its "
                "advance steps and the winning one) divided by the sum of 2^k, the attempts each block's k "
                "makes a miner expect before R is met. Blocks do not record attempts, and the accuracy check "
                "holds some hits back, so the real attempts are more and the real fraction lower.")
    uw_sub = (f'{uw["steps"]:,} steps in blocks {uw["first"]}–{uw["last"]} ÷ Σ2^k = {uw["expected"]:,} '
              'expected attempts' if uw else "no mined block yet")
    cards = "".join([
        card("tip height", str(st["height"]), tip_sub, "tip-height"),
        network_card(st),
        card("block time", duration(bt["median_s"]) if bt else "—", bt_sub, "block-time"),
        card("difficulty k", str(k), f"next block: 2^{k} = {1 << int(k or 0):,} attempts expected to meet R",
             "difficulty"),
        card("accuracy on E", f"{100 * correct / of:.1f}%" if correct is not None and of else "—",
             f"{correct if correct is not None else '?'} of {of or '?'} correct, {source}", "tip-accuracy"),
        card("useful work (estimate)", f'{100 * uw["fraction"]:.1f}%' if uw else "—", uw_sub, "useful-work",
             uw_title),
    ])
    pts = points(chart_blocks)
    charts = (
        '<div class="charts"><div class="chart"><h2>Learning curve</h2>'
        f'<div class="legend">accuracy of each block\'s model on E (line, left axis: measured by this node where '
        f'it replayed the block, else the header\'s claim) and the time since its parent (bars, right axis); '
        f'heights {pts[0].height if pts else 0}–{pts[-1].height if pts else 0}. Data: '
        '<a href="/explorer/learning-curve.csv" download id="curve-csv">CSV</a> · '
        '<a href="/explorer/learning-curve.json" id="curve-json">JSON</a></div>'
        f'{learning_curve(pts)}</div>'
        f'<div class="chart"><h2>Difficulty</h2><div class="legend">k by height</div>{difficulty_chart(pts)}</div></div>')
    return (state_banner(st) + f'<div class="cards overview" id="cards">{cards}</div>' + current_block(st) + charts
            + "<h2>Latest blocks</h2>" + blocks_table(recent, context)
            + miners_section(miners, miners_of))


def accuracy_text(b: dict) -> str:
    """A table cell: the block's accuracy on E in percent (as the chart and the card show it), the counts
    behind it in its tooltip."""
    hd, acc = b["header"], b.get("accuracy") or {}
    a, of = accuracy_of(b), acc.get("of")
    claim = f'{hd["acc_before"]} → {hd.get("acc_after")}' if "acc_before" in hd else str(hd.get("acc_after", "?"))
    title = f"claimed in the header: {claim} of {of} correct on E"
    if acc.get("measured_after") is not None:
        title += f'; measured by this node: {acc["measured_after"]}'
    return f'<td class="num" title="{escape(title)}">{f"{a * 100:.1f}%" if a is not None else ""}</td>'


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
        accuracy = accuracy_text(b)
        rows.append(f'<tr data-height="{b["height"]}"><td class="num">{b["height"]}</td><td>{block_link(b["hash"])}</td>'
                    f'<td>{miner_link(hd.get("miner", ""))}</td><td class="num">{hd.get("difficulty", "")}</td>'
                    f'<td class="num">{interval}</td>{accuracy}'
                    f'<td class="num">{steps_of(hd) if b["height"] else ""}</td><td class="num">{len(b.get("records") or [])}</td>'
                    f'<td>{utc(hd.get("timestamp_ms"))}</td></tr>')
    return ('<div class="wide"><table id="blocks"><thead><tr><th class="num">height</th><th>hash</th><th>miner</th><th class="num">k</th>'
            '<th class="num">interval s</th><th class="num" title="correct predictions on E: measured by this node where it replayed the block, else claimed in the header (the counts are in each cell&#39;s tooltip)">accuracy on E</th><th class="num">steps</th>'
            '<th class="num">records</th><th>time</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table></div>")


def miners_section(miners: list[tuple[str, int]], of: int | None = None) -> str:
    """The miners of the latest ``of`` mined blocks (the most frequent ones: ``miners``), each with its
    share of those ``of`` blocks."""
    of = of if of is not None else sum(n for _, n in miners)
    return (f'<h2>Miners of the latest {of} block{"s" if of != 1 else ""}</h2>' if of else "<h2>Miners</h2>") \
        + miners_table(miners, of)


def miners_table(miners: list[tuple[str, int]], of: int | None = None) -> str:
    total = of if of is not None else sum(n for _, n in miners)
    if not total:
        return '<div class="empty">no mined blocks yet</div>'
    rows = "".join(f'<tr><td>{miner_link(k)}</td><td class="num">{n}</td><td class="num">{100 * n / total:.0f}%</td></tr>'
                   for k, n in miners)
    return ('<div class="wide"><table id="miners"><thead><tr><th>miner</th><th class="num">blocks</th><th class="num">share</th>'
            f'</tr></thead><tbody>{rows}</tbody></table></div>')


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
            f'<h2>Header</h2><div class="wide"><table id="header-fields">{header_rows}</table></div>'
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
    return f'<div class="wide"><table id="block-facts">{rows}</table></div>'


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
    return ('<div class="wide"><table id="records"><thead><tr><th>type</th><th>model</th><th>owner</th><th>record</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


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
    return ('<div class="wide"><table id="tips"><thead><tr><th>status</th><th class="num">height</th><th>hash</th>'
            f'<th class="num">work</th></tr></thead><tbody>{rows}</tbody></table></div>')


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
    return form + ('<p>The first certificate on the chain is the original registration.</p><div class="wide"><table id="certificates">'
                   '<thead><tr><th class="num">height</th><th>block</th><th>owner</th><th>proof root</th>'
                   f'<th>metadata</th><th>time</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


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
    out.append('<h3>Requirements R and the winning step\'s changes</h3><div class="wide"><table id="proof-requirements"><thead><tr>'
               '<th class="num">#</th><th>parameter</th><th class="num">flat index</th><th>direction</th>'
               '<th class="num">w</th><th class="num">w\'</th><th class="num">change</th><th class="num">band</th>'
               f'<th>verdict</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
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
               '<div class="wide"><table id="proof-steps"><thead><tr><th class="num">step</th><th>role</th><th class="num">nonce</th>'
               f'<th>train indices</th><th>images</th></tr></thead><tbody>{"".join(srows)}</tbody></table></div>')
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
    out.append('<h3>Accuracy of W\' on E against the floor</h3><div class="wide"><table id="proof-accuracy">'
               + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in arows) + "</table></div></section>")
    return "".join(out)


def search_not_found(query: str, why: str, matches: list[dict] = ()) -> str:
    body = f'<h1>Search</h1><div class="banner warn" id="search-result">{escape(why)}</div>'
    if matches:
        body += "<h2>Matching blocks</h2>" + blocks_table(list(matches))
    return body
