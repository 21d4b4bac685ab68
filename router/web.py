"""The operator's pages: a live wall of the streams at ``/``, a page per stream, and a form to add
one. Pure rendering: the routes in ``router/api/`` read the tables and hand the records here.

* The wall: one tile per stream with its live picture (a colour JPEG the worker refreshes every
  few seconds, inlined as a ``data:`` image: the whole wall is one BatchGetItem of pictures), its
  state in colour (red: a critical defect is open or the source is lost or refused), the open
  defects, a level bar per audio channel and the lag. It reloads itself every ``REFRESH_S``.
* A stream's page: a timeline of its defects over media time, each defect with its start and end
  pictures and its evidence trace (every measured series over the defect's window) drawn as
  inline SVG, the notifications sent, and the actions: stop the stream, acknowledge a defect.

Stream names, URLs and reasons come from users, so every value is escaped. The pages run no
script at all and load nothing but the router's own style sheet and images: their
Content-Security-Policy says so. Actions are POST forms carrying a token that must match the
page's cookie (SameSite=Strict), and the routes refuse a cross-site Origin or Sec-Fetch-Site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from shared.models import Stream

RECENT_DEFECTS = 5  # defects read per tile of the wall, newest first
STREAMS_PER_PAGE = 20  # each one costs a Query per view of the wall
PAGE_DEFECTS = 10  # defects on a stream's page, each with its evidence (one GetItem each)
REFRESH_S = 5
THUMB_W, THUMB_H = 160, 90  # px; the size worker/evidence.py encodes
STALE_AFTER_S = 60.0  # a live picture older than this is shown faded, with its age
STATIC_DIR = Path(__file__).with_name("static")
CSRF_COOKIE = "avmon_csrf"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it browsers send "Origin: null" with form posts, which the
    # same-origin check of the actions then refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# What a series of the evidence trace is called on the page, and its unit.
SERIES_LABELS = {
    "luma_mean": ("luma", "code"),
    "luma_diff": ("picture difference", "code"),
    "audio_rms_dbfs": ("audio level", "dBFS"),
    "lufs_m": ("loudness (momentary)", "LUFS"),
    "lufs_s": ("loudness (short-term)", "LUFS"),
    "offset_ms": ("A/V offset", "ms"),
}
_PALETTE = ("#1a73e8", "#e8710a", "#188038", "#a142f4", "#d01884", "#12858e")


@dataclass(frozen=True)
class StreamView:
    """A stream and its most recent defect records (as ``GET /streams/{id}/defects`` shows them),
    newest first, and its live picture item (``worker/picture.py``) if there is one."""

    stream: Stream
    defects: Sequence[Mapping[str, Any]]
    live: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DefectView:
    record: Mapping[str, Any]
    evidence: Mapping[str, Any] | None = None
    ack: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StreamPage:
    stream: Stream
    defects: Sequence[DefectView]  # newest first
    deliveries: Sequence[Mapping[str, Any]] = ()
    live: Mapping[str, Any] | None = None
    csrf: str = ""
    error: str | None = None
    notices: Sequence[str] = field(default_factory=tuple)


def thumbnail_path(stream_id: str, defect_id: str) -> str:
    return f"/streams/{quote(stream_id, safe='')}/defects/{quote(defect_id, safe='')}/thumbnail.jpg"


def stream_page_path(stream_id: str) -> str:
    return f"/ui/streams/{quote(stream_id, safe='')}"


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f} s"


def _data_uri(jpeg_b64: str) -> str:
    return "data:image/jpeg;base64," + jpeg_b64


def _img(src: str, alt: str, cls: str = "thumb") -> str:
    return f'<img class="{cls}" src="{escape(src)}" width="{THUMB_W}" height="{THUMB_H}" alt="{escape(alt)}">'


def state_of(stream: Stream, open_defects: Sequence[Mapping[str, Any]]) -> str:
    """``alert`` (red), ``warn`` (amber), ``ok`` (green) or ``idle`` (gray)."""
    status = str(stream.status)
    if status == "REFUSED" or any(
        d.get("severity") == "critical" or d.get("type") == "signal_loss" for d in open_defects
    ):
        return "alert"
    if status in ("STOPPED", "COMPLETED") or str(stream.desired) == "STOPPED":
        return "idle"
    if open_defects or status in ("RECONNECTING", "PENDING"):
        return "warn"
    return "ok"


def _page(title: str, body: str, *, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{meta}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/avmon.css"></head>'
        f"<body>{body}</body></html>\n"
    )


# ------------------------------------------------------------------ the wall


def level_bars(levels: Sequence[float], width: int = THUMB_W) -> str:
    """One horizontal bar per audio channel, -60 to 0 dBFS (SVG: no style attributes needed)."""
    if not levels:
        return ""
    rows = []
    for i, level in enumerate(levels):
        frac = min(1.0, max(0.0, (float(level) + 60.0) / 60.0))
        colour = "#d93025" if level > -3 else "#f9ab00" if level > -12 else "#1e8e3e"
        y = i * 6
        rows.append(
            f'<rect x="0" y="{y}" width="{width}" height="4" fill="#e4e6ea"/>'
            f'<rect class="level" x="0" y="{y}" width="{frac * width:.0f}" height="4" fill="{colour}">'
            f"<title>channel {i + 1}: {float(level):.1f} dBFS</title></rect>"
        )
    return (
        f'<svg class="levels" width="{width}" height="{len(levels) * 6}" role="img" '
        f'aria-label="audio levels">{"".join(rows)}</svg>'
    )


def _tile(view: StreamView, now: float) -> str:
    s = view.stream
    open_defects = [d for d in view.defects if d.get("end_s") is None]
    state = state_of(s, open_defects)
    live = view.live
    if live and live.get("jpeg_b64"):
        age = now - float(live.get("taken_at", now))
        stale = age > STALE_AFTER_S
        picture = _img(
            _data_uri(str(live["jpeg_b64"])),
            f"{s.name or s.stream_id} now",
            "live" + (" stale" if stale else ""),
        )
        bars = level_bars(live.get("levels_dbfs") or [])
        age_note = f" · picture {age:.0f} s old" if stale else ""
    else:
        picture, bars, age_note = '<div class="live" title="no picture yet"></div>', "", ""
    chips = "".join(
        f'<span class="chip {escape(str(d.get("severity", "")))}">{escape(str(d["type"]))}</span>'
        for d in open_defects
    )
    lag = "" if s.lag_s is None else f" · lag {s.lag_s:.1f} s"
    return (
        f'<a class="tile state-{state}" id="{escape(s.stream_id)}" data-state="{state}" '
        f'href="{escape(stream_page_path(s.stream_id))}">'
        f'<div class="name">{escape(s.name or s.stream_id)}</div>'
        f'<span class="badge state-{state}">{escape(str(s.status).lower())}</span>'
        f"{picture}{bars}"
        f'<div class="facts">{len(open_defects)} open{escape(lag)}{escape(age_note)}</div>'
        f'<div class="chips">{chips}</div></a>'
    )


def render_page(
    views: Sequence[StreamView], *, next_token: str | None, updated_at: str, now: float = 0.0
) -> str:
    """The wall, as a string of HTML. ``updated_at`` is the ISO 8601 time of the reads, ``now``
    the same as epoch seconds (for the age of the pictures)."""
    tiles = "".join(_tile(v, now) for v in views) or '<p class="none">no streams yet</p>'
    more = (
        f'<p><a href="/?{escape(urlencode({"next_token": next_token}))}">more streams</a></p>'
        if next_token
        else ""
    )
    count = f"{len(views)} stream{'s' if len(views) != 1 else ''}"
    body = (
        f'<header class="bar"><h1>avmon</h1><span class="meta">{count} · read at {escape(updated_at)} · '
        f'refreshes every {REFRESH_S} s</span><a href="/ui/add">add a stream</a></header>'
        f'<main class="wall">{tiles}</main>{more}'
    )
    return _page(f"avmon: {count}", body, refresh=True)


# ------------------------------------------------------------------ a stream's page


def _scale(lo: float, hi: float, out_lo: float, out_hi: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (float(v) - lo) / span * (out_hi - out_lo)


def timeline_svg(defects: Sequence[Mapping[str, Any]], end_s: float, width: int = 720) -> str:
    """Defects as bars over media time, one lane per type (open ones reach ``end_s``)."""
    if not defects:
        return ""
    types = sorted({str(d["type"]) for d in defects})
    lane, left = 16, 110
    horizon = max([end_s] + [float(d.get("end_s") or d["start_s"]) for d in defects]) or 1.0
    x = _scale(0.0, horizon, left, width - 8)
    parts = []
    for i, kind in enumerate(types):
        y = 6 + i * lane
        parts.append(f'<text x="0" y="{y + 10}">{escape(kind)}</text>')
        parts.append(f'<line x1="{left}" y1="{y + 6}" x2="{width - 8}" y2="{y + 6}" stroke="#e4e6ea"/>')
        for d in (d for d in defects if str(d["type"]) == kind):
            x0, x1 = x(d["start_s"]), x(d.get("end_s") if d.get("end_s") is not None else horizon)
            colour = "#d93025" if d.get("severity") == "critical" else "#f9ab00"
            parts.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(2.0, x1 - x0):.1f}" height="12" fill="{colour}">'
                f"<title>{escape(kind)} {escape(_seconds(d['start_s']))} – {escape(_seconds(d.get('end_s')))}"
                "</title></rect>"
            )
    h = 12 + len(types) * lane
    parts.append(f'<text x="{left}" y="{h + 4}">0 s</text>')
    parts.append(f'<text x="{width - 60}" y="{h + 4}">{horizon:.1f} s</text>')
    return (
        f'<svg class="timeline" width="{width}" height="{h + 8}" role="img" '
        'aria-label="defects over media time">'
        f"{''.join(parts)}</svg>"
    )


def trace_svg(evidence: Mapping[str, Any], width: int = 560, row: int = 56) -> str:
    """Every series of a defect's evidence trace as a small line chart over the same time axis,
    with the defect's span shaded (red) and each series' range written beside it."""
    trace = {k: v for k, v in dict(evidence.get("trace") or {}).items() if v}
    if not trace:
        return ""
    # The time axis covers what was measured and the defect itself (the window asked for may
    # reach past the media that had been decoded when the record was made).
    times = [float(p[0]) for pts in trace.values() for p in pts]
    start = float(evidence.get("start_s", min(times)))
    end = evidence.get("end_s")
    t0, t1 = min([start, *times]), max([start if end is None else float(end), *times])
    left, right = 150, width - 8
    x = _scale(t0, t1, left, right)
    span_end = t1 if end is None else float(end)
    order = list(SERIES_LABELS)  # luma first, then picture difference, audio, loudness, offset
    ranked = sorted(
        trace.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])
    )
    parts = []
    for i, (name, pts) in enumerate(ranked):
        top = i * row
        values = [float(p[1]) for p in pts if math.isfinite(float(p[1]))]
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.1 or 1.0
        y = _scale(lo - pad, hi + pad, top + row - 8, top + 6)
        label, unit = SERIES_LABELS.get(name, (name, ""))
        parts.append(
            f'<rect class="defect-span" x="{x(start):.1f}" y="{top + 4}" '
            f'width="{max(1.0, x(span_end) - x(start)):.1f}" height="{row - 10}" fill="#fce8e6"/>'
        )
        parts.append(f'<text x="0" y="{top + 20}">{escape(label)}</text>')
        parts.append(f'<text x="0" y="{top + 34}">{lo:.1f} – {hi:.1f} {escape(unit)}</text>')
        line = " ".join(f"{x(p[0]):.1f},{y(p[1]):.1f}" for p in pts if math.isfinite(float(p[1])))
        colour = _PALETTE[i % len(_PALETTE)]
        parts.append(
            f'<polyline class="series" data-series="{escape(name)}" points="{line}" fill="none" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
    h = len(trace) * row
    parts.append(f'<text x="{left}" y="{h + 10}">{t0:.1f} s</text>')
    parts.append(f'<text x="{right - 50}" y="{h + 10}">{t1:.1f} s</text>')
    return (
        f'<svg class="trace" width="{width}" height="{h + 14}" role="img" aria-label="measurements">'
        f"{''.join(parts)}</svg>"
    )


def _hidden_token(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(csrf)}">'


def _defect_block(stream_id: str, view: DefectView, csrf: str) -> str:
    d, ev = view.record, view.evidence or {}
    defect_id, kind = str(d["defect_id"]), str(d["type"])
    severity = str(d.get("severity", ""))
    sev_class = severity if severity in ("critical", "warning") else ""
    end = d.get("end_s")
    until = '<span class="ongoing">ongoing</span>' if end is None else escape(_seconds(end))
    pictures = "".join(
        f"<figure>{_img(_data_uri(str(th['jpeg_b64'])), kind + ' ' + str(th.get('role')))}"
        f"<figcaption>{escape(str(th.get('role')))} · {escape(_seconds(th.get('t')))}</figcaption></figure>"
        for th in ev.get("thumbnails", [])
        if th.get("jpeg_b64")
    )
    if view.ack:
        ack = (
            f'<span class="acked">acknowledged by {escape(str(view.ack.get("by")))} '
            f"at {escape(str(view.ack.get('at')))}</span>"
        )
    else:
        action = f"{stream_page_path(stream_id)}/defects/{quote(defect_id, safe='')}/acknowledge"
        ack = (
            f'<form class="inline" method="post" action="{escape(action)}">{_hidden_token(csrf)}'
            '<input type="text" name="by" required maxlength="80" placeholder="your name" '
            'aria-label="your name">'
            " <button>acknowledge</button></form>"
        )
    metrics = " ".join(
        f"{escape(str(k))}={escape(str(v))}" for k, v in sorted((d.get("metrics") or {}).items())
    )
    return (
        f'<section class="defect" id="d-{escape(defect_id)}" data-defect-id="{escape(defect_id)}">'
        f'<div><strong>{escape(kind)}</strong> <span class="{sev_class}">{escape(severity)}</span> '
        f"{escape(_seconds(d.get('start_s')))} – {until} · started {escape(str(d.get('start_at') or ''))}"
        f' <span class="meta">{metrics}</span></div>'
        f"<div>{ack}</div>"
        f'<div class="pictures">{pictures}</div>{trace_svg(ev) if ev else ""}</section>'
    )


def _deliveries(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return '<p class="none">no notifications sent</p>'
    cells = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(str(r.get(k, '') if r.get(k) is not None else ''))}</td>"
            for k in ("at", "event", "target", "outcome", "status", "attempt")
        )
        + "</tr>"
        for r in rows
    )
    head = "".join(f"<th>{h}</th>" for h in ("at", "event", "target", "outcome", "status", "attempt"))
    return f'<table class="deliveries"><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>'


def render_stream_page(page: StreamPage, now: float = 0.0) -> str:
    s = page.stream
    open_defects = [v.record for v in page.defects if v.record.get("end_s") is None]
    state = state_of(s, open_defects)
    facts = " · ".join(
        escape(f"{k} {v}")
        for k, v in (
            ("url", s.url),
            ("state", f"{s.desired} / {s.status}"),
            ("owner", s.owner or "—"),
            ("lag", "—" if s.lag_s is None else f"{s.lag_s:.1f} s"),
            ("media time", "—" if s.media_time_s is None else f"{s.media_time_s:.1f} s"),
            ("frames", s.frames_analysed),
            ("captions", s.captions or "—"),
        )
    )
    reason = f'<p class="meta">reason: {escape(s.reason)}</p>' if s.reason else ""
    stop = (
        f'<form class="inline" method="post" action="{escape(stream_page_path(s.stream_id))}/stop">'
        f"{_hidden_token(page.csrf)}<button>stop monitoring</button></form>"
        if str(s.desired) == "RUNNING"
        else ""
    )
    live = ""
    if page.live and page.live.get("jpeg_b64"):
        live = _img(_data_uri(str(page.live["jpeg_b64"])), "now", "live") + level_bars(
            page.live.get("levels_dbfs") or []
        )
    error = f'<p class="error">{escape(page.error)}</p>' if page.error else ""
    notices = "".join(f'<p class="acked">{escape(n)}</p>' for n in page.notices)
    records = [v.record for v in page.defects]
    defects = (
        "".join(_defect_block(s.stream_id, v, page.csrf) for v in page.defects)
        or '<p class="none">no defects</p>'
    )
    body = (
        f'<header class="bar"><h1><a href="/">avmon</a> · {escape(s.name or s.stream_id)}</h1>'
        f'<span class="badge state-{state}" id="state" data-state="{state}">'
        f"{escape(str(s.status).lower())}</span>"
        f"{stop}</header>{error}{notices}"
        f'<div class="panel"><p class="meta">{facts}</p>{reason}{live}</div>'
        f'<div class="panel"><h2>timeline</h2>{timeline_svg(records, float(s.media_time_s or 0.0))}'
        f"<h2>defects (the latest {PAGE_DEFECTS})</h2>{defects}</div>"
        f'<div class="panel"><h2>notifications sent</h2>{_deliveries(page.deliveries)}</div>'
    )
    return _page(f"avmon: {s.name or s.stream_id}", body)


# ------------------------------------------------------------------ forms and messages


def render_add_page(csrf: str, *, error: str | None = None, values: Mapping[str, str] | None = None) -> str:
    v = values or {}
    error_html = f'<p class="error">{escape(error)}</p>' if error else ""
    checked = " checked" if v.get("realtime") else ""
    body = (
        '<header class="bar"><h1><a href="/">avmon</a> · add a stream</h1></header>'
        f'{error_html}<form class="panel" method="post" action="/ui/streams">{_hidden_token(csrf)}'
        '<label>URL <input type="text" name="url" required maxlength="2048" '
        f'value="{escape(v.get("url", ""))}"'
        ' placeholder="udp://@:5000, https://.../live.m3u8, file:///..."></label>'
        '<label>name <input type="text" name="name" maxlength="200" '
        f'value="{escape(v.get("name", ""))}"></label>'
        f'<label>webhook URL <input type="text" name="webhook_url" maxlength="2048" '
        f'value="{escape(v.get("webhook_url", ""))}"></label>'
        f'<label><input type="checkbox" name="realtime" value="1"{checked}> '
        "read a file at its own pace</label>"
        "<button>add</button></form>"
    )
    return _page("avmon: add a stream", body)


def render_message(title: str, message: str) -> str:
    return _page(
        f"avmon: {title}",
        f'<h1><a href="/">avmon</a> · {escape(title)}</h1><p class="error">{escape(message)}</p>',
    )
