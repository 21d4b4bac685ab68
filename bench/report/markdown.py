"""Markdown helpers of the benchmark report: tables and numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def f(value: float, digits: int = 2) -> str:
    if math.isnan(value) or math.isinf(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def usd(value: float) -> str:
    return f"${value:.6f}" if value < 0.01 else f"${value:,.4f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"

