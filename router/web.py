"""A read-only HTML page of the streams and their latest defects, for people who would rather look
than read JSON.

Pure rendering: the routes in ``router/api.py`` read the tables (one Scan page of streams, one
bounded Query per stream) and hand the records here. Stream names, URLs and reasons come from
users, so every value is escaped, and the page may load nothing but its own thumbnails: its
Content-Security-Policy allows images from the router and the one inline style sheet (by hash),
and nothing else (no scripts at all).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from shared.models import Stream

RECENT_DEFECTS = 5  # defects shown per stream, newest first
STREAMS_PER_PAGE = 20  # each one costs a Query per page view
REFRESH_S = 5
THUMB_W, THUMB_H = 160, 90  # px; the size worker/evidence.py encodes

STYLE = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; background: #f6f7f9; color: #222; }}
h1 {{ font-size: 20px; margin: 0; }}
.meta, .none {{ color: #666; }}
.stream {{ background: #fff; border: 1px solid #d8dbe0; border-radius: 6px; padding: 10px 14px;
  margin: 12px 0; }}
.stream h2 {{ font-size: 16px; margin: 0 0 4px; overflow-wrap: anywhere; }}
.facts {{ display: flex; flex-wrap: wrap; gap: 2px 16px; margin: 0 0 8px; }}
.facts div {{ display: flex; gap: 4px; }}
.facts dt {{ color: #666; }}
.facts dd {{ margin: 0; overflow-wrap: anywhere; }}
table {{ border-collapse: collapse; }}
td, th {{ text-align: left; padding: 4px 12px 4px 0; vertical-align: top; }}
th {{ color: #666; font-weight: normal; }}
.thumb {{ display: block; width: {THUMB_W}px; height: {THUMB_H}px; border: 2px solid #9aa0a8;
  background: #e4e6ea; }}
.critical {{ color: #b3261e; font-weight: bold; }}
.warning {{ color: #9a6700; font-weight: bold; }}
.ongoing {{ color: #b3261e; }}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; img-src 'self'; style-src 'sha256-{_STYLE_HASH}'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class StreamView:
    """A stream and its most recent defect records (as ``GET /streams/{id}/defects`` shows them),
    newest first."""

    stream: Stream
    defects: Sequence[Mapping[str, Any]]


def thumbnail_path(stream_id: str, defect_id: str) -> str:
    return f"/streams/{quote(stream_id, safe='')}/defects/{quote(defect_id, safe='')}/thumbnail.jpg"


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{float(value):.2f} s"


def _fact(label: str, value: Any) -> str:
    shown = "—" if value is None or value == "" else str(value)
    return f"<div><dt>{escape(label)}</dt><dd>{escape(shown)}</dd></div>"


def _defect_row(stream_id: str, d: Mapping[str, Any]) -> str:
    defect_id, kind = str(d["defect_id"]), str(d["type"])
    if d.get("evidence_url"):
        alt = f"{kind} at {_seconds(d['start_s'])}"
        picture = (
            f'<img class="thumb" src="{escape(thumbnail_path(stream_id, defect_id))}" '
            f'width="{THUMB_W}" height="{THUMB_H}" alt="{escape(alt)}">'
        )
    else:
        picture = '<div class="thumb" title="no thumbnail"></div>'
    end = d.get("end_s")
    until = '<span class="ongoing">ongoing</span>' if end is None else escape(_seconds(end))
    severity = str(d.get("severity", ""))
    sev_class = severity if severity in ("critical", "warning") else ""
    return (
        f'<tr class="defect" data-defect-id="{escape(defect_id)}">'
        f"<td>{picture}</td>"
        f"<td>{escape(kind)}</td>"
        f'<td class="{sev_class}">{escape(severity)}</td>'
        f"<td>{escape(_seconds(d.get('start_s')))} – {until}</td>"
        f"<td>{escape(str(d.get('start_at') or ''))}</td>"
        "</tr>"
    )


def _stream_section(view: StreamView) -> str:
    s = view.stream
    facts = "".join(
        (
            _fact("id", s.stream_id),
            _fact("url", s.url),
            _fact("state", f"{s.desired} / {s.status}"),
            _fact("owner", s.owner),
            _fact("lag", None if s.lag_s is None else f"{s.lag_s:.1f} s"),
            _fact("media time", None if s.media_time_s is None else f"{s.media_time_s:.1f} s"),
            _fact("frames", s.frames_analysed),
            *((_fact("reason", s.reason),) if s.reason else ()),
        )
    )
    if view.defects:
        rows = "".join(_defect_row(s.stream_id, d) for d in view.defects)
        defects = (
            '<table class="defects"><thead><tr><th>picture</th><th>type</th><th>severity</th>'
            f"<th>media time</th><th>started (UTC)</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        defects = '<p class="none">no defects</p>'
    return (
        f'<section class="stream" id="{escape(s.stream_id)}">'
        f"<h2>{escape(s.name or s.stream_id)}</h2>"
        f'<dl class="facts">{facts}</dl>{defects}</section>'
    )


def render_page(views: Sequence[StreamView], *, next_token: str | None, updated_at: str) -> str:
    """The whole page, as a string of HTML. ``updated_at`` is the ISO 8601 time of the reads."""
    sections = "".join(_stream_section(v) for v in views) or '<p class="none">no streams yet</p>'
    more = (
        f'<p><a href="/?{escape(urlencode({"next_token": next_token}))}">more streams</a></p>'
        if next_token
        else ""
    )
    count = f"{len(views)} stream{'s' if len(views) != 1 else ''}"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>avmon: {count}</title><style>{STYLE}</style></head>"
        f'<body><header><h1>avmon</h1><p class="meta">{count}, the last {RECENT_DEFECTS} defects of '
        f"each · read at {escape(updated_at)} · refreshes every {REFRESH_S} s · read-only</p></header>"
        f"<main>{sections}{more}</main></body></html>\n"
    )
