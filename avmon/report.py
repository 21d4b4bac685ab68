"""What `avmon analyze` says about a file beyond its defect lines: progress on a terminal, a
summary per defect type, and a report (``--report out.html`` with the pictures and traces drawn,
or ``--report out.json``)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, TextIO


@dataclass
class Progress:
    """One line on a terminal, rewritten in place: media time, speed × real time, defects."""

    out: TextIO
    started: float = field(default_factory=time.monotonic)
    shown: bool = False

    def line(self, media_s: float | None, defects: int, open_defects: int) -> str:
        elapsed = max(1e-6, time.monotonic() - self.started)
        media = media_s or 0.0
        return (
            f"media {media:7.1f} s · {media / elapsed:5.1f}× real time · "
            f"{defects} defect{'s' if defects != 1 else ''} so far ({open_defects} open)"
        )

    def show(self, media_s: float | None, defects: int, open_defects: int) -> None:
        self.out.write("\r\033[K" + self.line(media_s, defects, open_defects))
        self.out.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.out.write("\r\033[K")
            self.out.flush()
            self.shown = False


def summarise(defects: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Per defect type: how many, their total and longest duration (s) and the first start (s).
    A defect still open at the end counts until its ``end_s`` (the stream's end, after flush)."""
    out: dict[str, dict[str, float | int]] = {}
    for d in defects:
        row = out.setdefault(
            str(d["type"]), {"count": 0, "total_s": 0.0, "longest_s": 0.0, "first_s": math.inf}
        )
        length = max(0.0, float(d.get("end_s") or d["start_s"]) - float(d["start_s"]))
        row["count"] = int(row["count"]) + 1
        row["total_s"] = round(float(row["total_s"]) + length, 3)
        row["longest_s"] = max(float(row["longest_s"]), round(length, 3))
        row["first_s"] = min(float(row["first_s"]), float(d["start_s"]))
    return dict(sorted(out.items()))


def summary_table(summary: Mapping[str, Mapping[str, float | int]]) -> str:
    if not summary:
        return "no defects"
    lines = [f"{'type':<24} {'count':>5} {'total s':>9} {'longest s':>9} {'first at s':>10}"]
    for kind, row in summary.items():
        lines.append(
            f"{kind:<24} {int(row['count']):>5} {float(row['total_s']):>9.2f} "
            f"{float(row['longest_s']):>9.2f} {float(row['first_s']):>10.2f}"
        )
    return "\n".join(lines)


def report_dict(
    source: str,
    defects: Sequence[Mapping[str, Any]],
    evidence: Mapping[str, Mapping[str, Any]],
    *,
    media_s: float | None,
    elapsed_s: float,
) -> dict[str, Any]:
    return {
        "source": source,
        "media_s": None if media_s is None else round(media_s, 3),
        "elapsed_s": round(elapsed_s, 3),
        "summary": summarise(defects),
        "defects": [
            {**d, "evidence": evidence.get(str(d["defect_id"]))}
            for d in sorted(defects, key=lambda d: d["start_s"])
        ],
    }


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    """``.json``: the report as JSON; anything else (``.html``): a page that needs nothing else."""
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(report, indent=1) + "\n")
    else:
        path.write_text(render_html(report))


def render_html(report: Mapping[str, Any]) -> str:
    from router import web  # pure rendering (no AWS): the same charts as the router's pages

    defects = list(report["defects"])
    rows = "".join(
        f"<tr><td>{escape(kind)}</td><td>{row['count']}</td><td>{row['total_s']:.2f}</td>"
        f"<td>{row['longest_s']:.2f}</td><td>{row['first_s']:.2f}</td></tr>"
        for kind, row in report["summary"].items()
    )
    table = (
        "<table><thead><tr><th>type</th><th>count</th><th>total s</th><th>longest s</th>"
        f"<th>first at s</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else '<p class="none">no defects</p>'
    )
    blocks = []
    for d in defects:
        ev = d.get("evidence") or {}
        pictures = "".join(
            f'<figure><img class="thumb" src="data:image/jpeg;base64,{escape(str(th["jpeg_b64"]))}" '
            f'width="{th.get("width", 160)}" height="{th.get("height", 90)}" '
            f'alt="{escape(str(th.get("role")))}">'
            f"<figcaption>{escape(str(th.get('role')))} · {float(th.get('t', 0)):.2f} s</figcaption></figure>"
            for th in ev.get("thumbnails", [])
        )
        metrics = " ".join(
            f"{escape(str(k))}={escape(str(v))}" for k, v in sorted((d.get("metrics") or {}).items())
        )
        end = d.get("end_s")
        blocks.append(
            f'<section class="defect" data-defect-id="{escape(str(d["defect_id"]))}"><div>'
            f"<strong>{escape(str(d['type']))}</strong> {escape(str(d.get('severity', '')))} "
            f"{float(d['start_s']):.2f} – {'…' if end is None else f'{float(end):.2f}'} s "
            f'<span class="meta">{metrics}</span></div>'
            f'<div class="pictures">{pictures}</div>{web.trace_svg(ev) if ev else ""}</section>'
        )
    media = report.get("media_s")
    css = (web.STATIC_DIR / "avmon.css").read_text()
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        # A report opened from disk: nothing but its own inline pictures and style.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">"
        f"<title>avmon report: {escape(str(report['source']))}</title><style>{css}</style></head><body>"
        f'<h1>avmon report</h1><p class="meta">{escape(str(report["source"]))} · '
        f"{'—' if media is None else f'{float(media):.1f} s of media'} analysed in "
        f"{float(report['elapsed_s']):.1f} s</p>"
        f'<div class="panel"><h2>summary</h2>{table}'
        f"<h2>timeline</h2>{web.timeline_svg(defects, float(media or 0.0))}</div>"
        f'<div class="panel"><h2>defects</h2>{"".join(blocks) or "<p class=none>no defects</p>"}</div>'
        "</body></html>\n"
    )
