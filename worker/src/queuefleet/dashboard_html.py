"""The dashboard's HTML: one server-rendered page from the overview document (dashboard_data.py).

No scripts and no external assets: inline CSS, an inline SVG chart, and plain forms for
retry and forget (shown only within a session, see dashboard.py). Every value is escaped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape
from typing import Any, Iterable
from urllib.parse import quote

REFRESH_SECONDS = 5
CHART_W, CHART_H, BAR = 720, 120, 12

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2430}
header{background:#1d2430;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header .meta{color:#b8c0cc;font-size:13px}header a{color:#9cc3ff}
main{padding:12px 24px 32px;max-width:1400px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:0 0 8px}h2 small{font-weight:normal;color:#5b6575;margin-left:8px}
table{border-collapse:collapse;width:100%}th,td{padding:4px 8px;text-align:left;border-bottom:1px solid #edf0f3;vertical-align:top}
th{font-size:12px;color:#5b6575;text-transform:uppercase;letter-spacing:.03em}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.group td{background:#f0f3f7;font-weight:600}tr.group td span{font-weight:normal;color:#5b6575}
.state{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;color:#fff}
.busy{background:#2f7d32}.idle{background:#7a8594}.paused{background:#c77700}
.banner{padding:8px 12px;border-radius:5px;margin:12px 0;border:1px solid}
.error{background:#fdecec;border-color:#f1b0b0;color:#8a1c1c}.info{background:#eef4fd;border-color:#bcd3f5;color:#1c3f73}
.totals{display:flex;gap:28px;margin:4px 0 8px}.totals b{font-size:20px}.done{color:#2f7d32}.failed{color:#c62828}
.err{font-family:ui-monospace,Menlo,monospace;font-size:12px;color:#8a1c1c;word-break:break-word}
.muted{color:#7a8594}form.inline{display:inline;margin:0 2px}button{font-size:12px;padding:1px 8px;cursor:pointer}
svg text{font-size:11px;fill:#5b6575}tr.stale td{color:#7a8594}
"""


@dataclass
class Access:
    """What the viewer may do: state is off (no token configured: read-only), locked (not logged
    in) or ok (logged in: retry and forget)."""

    state: str


def human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _row(cells: Iterable[str], numeric: Iterable[int] = (), css: str = "") -> str:
    right = set(numeric)
    cells_html = "".join(f'<td class="n">{c}</td>' if i in right else f"<td>{c}</td>" for i, c in enumerate(cells))
    return (f'<tr class="{css}">' if css else "<tr>") + cells_html + "</tr>"


def _head(columns: Iterable[str], numeric: Iterable[int] = ()) -> str:
    right = set(numeric)
    return "<tr>" + "".join(f'<th class="n">{_e(c)}</th>' if i in right else f"<th>{_e(c)}</th>" for i, c in enumerate(columns)) + "</tr>"


def _document(title: str, header: str, body: str, *, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}<title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
            f"<header><h1>queuefleet</h1>{header}</header><main>{body}</main></body></html>")


def render_page(doc: dict[str, Any], access: Access) -> str:
    """The fleet's page; it refreshes itself (its URL carries nothing: a session is a cookie)."""
    clock = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc["now"]))
    body = "".join([banners(doc), workers_section(doc), autoscale_section(doc), scale_history_section(doc),
                    queues_section(doc), throughput_section(doc), failed_section(doc, access)])
    return _document("queuefleet dashboard", f'<span class="meta">{_e(clock)}</span>{_mode(access)}', body, refresh=True)


def render_login(error: str = "") -> str:
    """The login form: the token is posted, never put in a URL; no refresh to wipe what is typed."""
    banner = f'<div class="banner error" role="alert">{_e(error)}</div>' if error else ""
    form = ('<section><h2>Log in to retry and forget</h2><form method="post" action="/login">Token: '
            '<input type="password" name="token" autofocus autocomplete="current-password" size="40"> '
            '<button type="submit">Log in</button></form>'
            '<p class="muted">The session lasts 12 hours, or until the dashboard restarts. <a href="/">Back to the page</a></p>'
            '</section>')
    return _document("queuefleet dashboard: log in", '<span class="meta">log in</span>', banner + form, refresh=False)


def _mode(access: Access) -> str:
    if access.state == "off":
        return '<span class="meta">read-only</span>'
    if access.state == "ok":
        return ('<span class="meta">retry and forget allowed <form class="inline" method="post" action="/logout">'
                '<button type="submit">Log out</button></form></span>')
    return '<span class="meta">read-only: <a href="/login">log in</a> to retry or forget</span>'


def banners(doc: dict[str, Any]) -> str:
    return "".join(f'<div class="banner error" role="alert">{_e(message)}</div>' for message in doc["errors"].values())


def workers_section(doc: dict[str, Any]) -> str:
    workers, pools = doc["workers"], doc["pools"]
    hosts = len({p["host"] for p in pools})
    title = f"{len(workers)} process{'es' if len(workers) != 1 else ''} in {len(pools)} pool{'s' if len(pools) != 1 else ''}" \
            f" on {hosts} host{'s' if hosts != 1 else ''}"
    columns = ("pid", "release", "state", "current job", "queues", "processed", "failed", "up", "seen")
    rows: list[str] = []
    for pool in pools:
        states = ", ".join(f"{pool[s]} {s}" for s in ("busy", "idle", "paused") if pool[s])
        rows.append(f'<tr class="group"><td colspan="{len(columns)}">{_e(pool["host"])} / {_e(pool["pool"])} '
                    f'<span> · {pool["processes"]} process{"es" if pool["processes"] != 1 else ""} ({_e(states)})</span></td></tr>')
        for w in (w for w in workers if (w["host"], w["pool"]) == (pool["host"], pool["pool"])):
            job = f'<span title="{_e(w["job_id"])}">{_e(w["job"])}</span>' if w["job"] else '<span class="muted">-</span>'
            rows.append(_row([_e(w["pid"]), _e(w["release"] or "-"), f'<span class="state {_e(w["state"])}">{_e(w["state"])}</span>',
                              job, _e(w["queues"]), _e(w["processed"]), _e(w["failed"]), _e(human_age(w["up_seconds"])),
                              _e(human_age(w["seen_seconds_ago"]) + " ago")], numeric=(5, 6, 7)))
    table = f"<table>{_head(columns, (5, 6, 7))}{''.join(rows)}</table>" if rows else '<p class="muted">No live workers.</p>'
    return f'<section id="workers"><h2>Hosts, pools and processes<small>{_e(title)}</small></h2>{table}</section>'


def autoscale_section(doc: dict[str, Any]) -> str:
    """Each autoscaled pool's bounds and sizes per host, and per pool over its live hosts when there
    are several (nothing when no pool autoscales). A stale announcement is greyed, out of the sums."""
    slots = doc["autoscale"]["pools"]
    if not slots:
        return ""
    sizes, numeric = ("min", "desired", "running", "max"), (2, 3, 4, 5)
    rows = []
    for pool in dict.fromkeys(s["pool"] for s in slots):
        mine = [s for s in slots if s["pool"] == pool]
        for s in mine:
            announced = human_age(s["age"]) + " ago" + ("" if s["live"] else " (stale: its autoscaler stopped?)")
            cells = [_e(pool), _e(s["host"]), *(_e("-" if s[k] is None else s[k]) for k in sizes), _e(announced)]
            rows.append(_row(cells, numeric, "" if s["live"] else "stale"))
        live = [s for s in mine if s["live"]]
        if len(live) > 1:
            totals = (_e(sum(s[k] or 0 for s in live)) for k in sizes)
            rows.append(_row([_e(pool), _e(f"all {len(live)} hosts"), *totals, ""], numeric, "group"))
    live_pools = {s["pool"] for s in slots if s["live"]}
    hosts = len({s["host"] for s in slots if s["live"]})
    title = f"{len(live_pools)} pool{'s' if len(live_pools) != 1 else ''} on {hosts} host{'s' if hosts != 1 else ''}"
    return (f'<section id="autoscale"><h2>Autoscaled pools<small>{_e(title)}</small></h2>'
            f"<table>{_head(('pool', 'host', *sizes, 'announced'), numeric)}{''.join(rows)}</table></section>")


def scale_history_section(doc: dict[str, Any]) -> str:
    """The newest changes of size the autoscalers made, newest first (nothing when there are none)."""
    events = doc["autoscale"]["events"]
    if not events:
        return ""
    columns = ("time", "host", "pool", "change", "fleet wanted", "reason")
    rows = [_row([_e(f'{time.strftime("%H:%M:%S", time.gmtime(e["at"]))} ({human_age(e["ago"])} ago)'), _e(e["host"]),
                  _e(e["pool"]), _e(f'{e["from"]} → {e["to"]}'), _e("-" if e["wanted"] is None else e["wanted"]),
                  _e(e["reason"])], (4,)) for e in events]
    return (f'<section id="scale-history"><h2>Scale history<small>last {len(events)} change{"s" if len(events) != 1 else ""}'
            f" (times UTC)</small></h2><table>{_head(columns, (4,))}{''.join(rows)}</table></section>")


def queues_section(doc: dict[str, Any]) -> str:
    columns = ("queue", "ready", "delayed", "reserved", "oldest ready")
    rows = [_row([_e(q["queue"]), _e(q["ready"]), _e(q["delayed"]), _e(q["reserved"]),
                  _e(human_age(q["oldest_age"]) if q["ready"] else "-")], numeric=(1, 2, 3, 4)) for q in doc["queues"]]
    table = f"<table>{_head(columns, (1, 2, 3, 4))}{''.join(rows)}</table>" if rows else '<p class="muted">No queues.</p>'
    return f'<section id="queues"><h2>Queues</h2>{table}</section>'


def throughput_section(doc: dict[str, Any]) -> str:
    t = doc["throughput"]
    totals = (f'<div class="totals"><span class="done">done <b>{_e(t["done"])}</b></span>'
              f'<span class="failed">failed <b>{_e(t["failed"])}</b></span></div>')
    return f'<section id="throughput"><h2>Throughput, last hour<small>jobs per minute</small></h2>{totals}{chart(t["minutes"])}</section>'


def chart(minutes: list[dict[str, Any]]) -> str:
    """Stacked bars per minute (done, failed on top), oldest on the left."""
    if not minutes:
        return '<p class="muted">No data.</p>'
    top = max(max(m["done"] + m["failed"] for m in minutes), 1)
    scale = (CHART_H - 10) / top
    bars = []
    for i, m in enumerate(minutes):
        x, done_h, failed_h = 40 + i * BAR, m["done"] * scale, m["failed"] * scale
        label = f'{time.strftime("%H:%M", time.gmtime(m["minute"] * 60))} UTC: {m["done"]} done, {m["failed"]} failed'
        bars.append(f'<g><title>{_e(label)}</title>'
                    f'<rect x="{x}" y="{CHART_H - done_h:.1f}" width="{BAR - 2}" height="{done_h:.1f}" fill="#43a047"/>'
                    f'<rect x="{x}" y="{CHART_H - done_h - failed_h:.1f}" width="{BAR - 2}" height="{failed_h:.1f}" fill="#e53935"/></g>')
    width = 40 + len(minutes) * BAR
    axis = (f'<line x1="38" y1="{CHART_H + .5}" x2="{width}" y2="{CHART_H + .5}" stroke="#aab2bd"/>'
            f'<text x="34" y="14" text-anchor="end">{top}</text><text x="34" y="{CHART_H}" text-anchor="end">0</text>'
            f'<text x="40" y="{CHART_H + 14}">-{len(minutes)}m</text>'
            f'<text x="{width}" y="{CHART_H + 14}" text-anchor="end">now</text>')
    return (f'<svg role="img" aria-label="jobs done and failed per minute" width="{width}" height="{CHART_H + 18}" '
            f'viewBox="0 0 {width} {CHART_H + 18}" xmlns="http://www.w3.org/2000/svg">{axis}{"".join(bars)}</svg>')


def failed_section(doc: dict[str, Any], access: Access) -> str:
    jobs, total = doc["failed_jobs"], doc["failed_total"]
    title = "" if total is None else f"{len(jobs)} newest of {total}" if total > len(jobs) else f"{total} in all"
    columns = ["id", "queue", "job", "failed at", "error"] + (["actions"] if access.state == "ok" else [])
    rows = []
    for job in jobs:
        cells = [_e(job["id"]), _e(job["queue"]), _e(job["job"]), _e(job["failed_at"].replace("T", " ").replace("+00:00", " UTC")),
                 f'<span class="err">{_e(job["error"])}</span>']
        if access.state == "ok":
            cells.append(_action(job["id"], "retry") + _action(job["id"], "forget"))
        rows.append(_row(cells))
    note = "" if access.state == "ok" else '<p class="muted">Read-only: retry and forget need a login with the dashboard token.</p>'
    table = f"<table>{_head(columns)}{''.join(rows)}</table>" if rows else '<p class="muted">No failed jobs.</p>'
    return f'<section id="failed"><h2>Failed jobs<small>{_e(title)}</small></h2>{table}{note if rows else ""}</section>'


def _action(row_id: int, action: str) -> str:
    return (f'<form class="inline" method="post" action="/failed/{quote(str(row_id))}/{action}">'
            f'<button type="submit">{action.capitalize()}</button></form>')
