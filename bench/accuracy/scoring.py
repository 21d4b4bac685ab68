"""Matching what the pipeline found to the truth, and the figures: recall, precision, start,
end and A/V offset errors per defect type (the rules are in :mod:`bench.accuracy`'s docstring)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.accuracy.corpus import ClipPlan
from bench.accuracy.encoders import ENCODERS
from bench.accuracy.ffmpeg_cli import CLI_FORMATS
from shared.models import Defect

TOLERANCE_S = 0.5  # a found start within this of the truth's start matches
TARGET_RECALL = 0.98
TARGET_PRECISION = 0.98
TARGET_START_ERROR_S = 0.2  # mean |start error| of the matches
TARGET_OFFSET_MS = 20.0  # |found offset_ms - injected offset_ms| on sync marks

# Defect types as the truth names them, in report order; blockiness and signal_loss have no
# truth of their own here (blockiness may stand for decode_error) but can be false positives.
TRUTH_TYPES = (
    "black",
    "freeze",
    "silence",
    "clipping",
    "loudness",
    "av_sync",
    "decode_error",
    "timestamp_jump",
    "stutter",
    "phase_inversion",
)
REPORT_TYPES = (*TRUTH_TYPES, "blockiness", "signal_loss", "stereo_collapsed")


@dataclass(frozen=True)
class Found:
    """A defect the pipeline reported (its final record)."""

    type: str
    start_s: float
    end_s: float | None
    key: str
    severity: str
    metrics: dict[str, float]

    @classmethod
    def of(cls, d: Defect) -> Found:
        prefix = f"{max(d.start_s, 0.0):013.3f}-{d.type.value}"
        key = d.defect_id[len(prefix) + 1 :] if d.defect_id.startswith(prefix + "-") else ""
        numbers = {k: float(v) for k, v in d.metrics.items() if isinstance(v, float | int)}
        return cls(d.type.value, d.start_s, d.end_s, key, d.severity, numbers)

    def label(self) -> str:
        end = "open" if self.end_s is None else f"{self.end_s:.2f}"
        key = f"[{self.key}]" if self.key else ""
        return f"{self.type}{key}@{self.start_s:.2f}-{end}"


@dataclass(frozen=True)
class Truth:
    type: str
    start_s: float
    end_s: float  # what the detector's end should be (see the module docstring)
    params: dict[str, Any]

    @classmethod
    def of(cls, d: dict[str, Any]) -> Truth:
        params = dict(d.get("params", {}))
        end = float(d["end_s"])
        if d["type"] == "decode_error":
            end = float(params.get("recovers_by_s", end))
        elif d["type"] == "timestamp_jump":
            end = float(d["start_s"]) + float(params["jump_s"])
        return cls(d["type"], float(d["start_s"]), end, params)

    @property
    def accepts(self) -> tuple[str, ...]:
        accepted = tuple(self.params.get("expect", [self.type]))
        if self.params.get("injected") == "drop":
            # Whole frames removed (MP4: no transport packets to lose): lost references are
            # decode_error's (frame_num gaps), missing pictures also stutter's.
            accepted = (*accepted, "stutter")
        return accepted

    def admits(self, start_s: float, tolerance: float) -> bool:
        """Whether a record starting at ``start_s`` may be this truth: within the tolerance of
        its start, or, for transport damage (lost at random over a span, shown until the next
        keyframe), anywhere the damage can be on screen."""
        if self.type == "decode_error":
            return self.start_s - tolerance <= start_s <= max(self.end_s, self.start_s + tolerance)
        return abs(start_s - self.start_s) <= tolerance

    def label(self) -> str:
        injected = self.params.get("injected", self.type)
        extra = {
            k: v for k, v in self.params.items() if k in ("offset_ms", "gain_db", "jump_s", "level_dbfs")
        }
        detail = ",".join(f"{k}={v:g}" for k, v in extra.items())
        return f"{injected}@{self.start_s:.2f}-{self.end_s:.2f}" + (f"({detail})" if detail else "")


@dataclass(frozen=True)
class Match:
    truth: Truth
    found: Found

    @property
    def start_error(self) -> float:
        return self.found.start_s - self.truth.start_s

    @property
    def end_error(self) -> float | None:
        return None if self.found.end_s is None else self.found.end_s - self.truth.end_s

    @property
    def offset_error_ms(self) -> float | None:
        want, got = self.truth.params.get("offset_ms"), self.found.metrics.get("offset_ms")
        return None if want is None or got is None else float(got) - float(want)


@dataclass
class ClipResult:
    plan: ClipPlan
    media: str  # the file
    truths: list[Truth]
    found: list[Found]
    matches: list[Match] = field(default_factory=list)
    missed: list[Truth] = field(default_factory=list)
    false: list[Found] = field(default_factory=list)
    duplicates: list[tuple[Found, Truth]] = field(default_factory=list)
    seconds: float = 0.0  # analysis time (wall)
    media_s: float = 0.0


def match(truths: Sequence[Truth], found: Sequence[Found], tolerance: float = TOLERANCE_S) -> ClipResult:
    """Pair found defects with truths one to one, closest start first (see the module docstring)."""
    pairs = sorted(
        (abs(f.start_s - t.start_s), ti, fi)
        for ti, t in enumerate(truths)
        for fi, f in enumerate(found)
        if f.type in t.accepts and t.admits(f.start_s, tolerance)
    )
    # Prefer the truth's own type (decode_error over blockiness) when both are in tolerance.
    pairs.sort(key=lambda p: (found[p[2]].type != truths[p[1]].type, p[0]))
    used_t: set[int] = set()
    used_f: set[int] = set()
    result = ClipResult(ClipPlan("", "defects"), "", list(truths), list(found))
    for _, ti, fi in pairs:
        if ti in used_t or fi in used_f:
            continue
        used_t.add(ti)
        used_f.add(fi)
        result.matches.append(Match(truths[ti], found[fi]))
    result.missed = [t for i, t in enumerate(truths) if i not in used_t]
    for fi, f in enumerate(found):
        if fi in used_f:
            continue
        twin = next(
            (
                truths[ti]
                for ti in sorted(used_t)
                if f.type in truths[ti].accepts and truths[ti].admits(f.start_s, tolerance)
            ),
            None,
        )
        if twin is not None:
            result.duplicates.append((f, twin))
        else:
            result.false.append(f)
    result.matches.sort(key=lambda m: m.truth.start_s)
    return result


@dataclass
class TypeFigures:
    type: str
    truths: int = 0
    found: int = 0
    tp: int = 0
    fp: int = 0
    duplicates: int = 0
    start_errors: list[float] = field(default_factory=list)
    end_errors: list[float] = field(default_factory=list)
    offset_errors_ms: list[float] = field(default_factory=list)

    @property
    def fn(self) -> int:
        return self.truths - self.tp

    @property
    def recall(self) -> float | None:
        return self.tp / self.truths if self.truths else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def mean_start_error(self) -> float | None:
        return statistics.fmean(abs(e) for e in self.start_errors) if self.start_errors else None

    @property
    def max_start_error(self) -> float | None:
        return max(abs(e) for e in self.start_errors) if self.start_errors else None

    @property
    def mean_end_error(self) -> float | None:
        return statistics.fmean(abs(e) for e in self.end_errors) if self.end_errors else None

    def targets(self) -> dict[str, bool | None]:
        """Which of the issue's targets this type meets (None: nothing to judge)."""
        r, p, e = self.recall, self.precision, self.mean_start_error
        met: dict[str, bool | None] = {
            "recall": None if r is None else r >= TARGET_RECALL,
            "precision": None if p is None else p >= TARGET_PRECISION,
            "start_error": None if e is None else e <= TARGET_START_ERROR_S,
        }
        if self.offset_errors_ms:
            met["offset"] = max(abs(x) for x in self.offset_errors_ms) <= TARGET_OFFSET_MS
        if self.truths == 0:
            met = {"precision": self.fp == 0}  # a type with no truth here: only false alarms count
        return met


def figures(results: Sequence[ClipResult]) -> dict[str, TypeFigures]:
    table = {t: TypeFigures(t) for t in REPORT_TYPES}

    def row(name: str) -> TypeFigures:
        return table.setdefault(name, TypeFigures(name))

    for r in results:
        if r.plan.kind == "limit":
            continue  # shown, not counted: see LIMITS
        for t in r.truths:
            row(t.type).truths += 1
        for f in r.found:
            row(f.type).found += 1
        for m in r.matches:
            fig = row(m.truth.type)
            fig.tp += 1
            fig.start_errors.append(m.start_error)
            if m.end_error is not None:
                fig.end_errors.append(m.end_error)
            if m.offset_error_ms is not None:
                fig.offset_errors_ms.append(m.offset_error_ms)
        for f in r.false:
            row(f.type).fp += 1
        for _, t in r.duplicates:
            row(t.type).duplicates += 1
    return table


def breakdown(results: Sequence[ClipResult]) -> list[tuple[str, int, int, list[float]]]:
    """(injected type + container, truths, matched, start errors) for the transport defects,
    whose detection depends on the container."""
    rows: dict[str, tuple[int, int, list[float]]] = {}
    for r in results:
        matched = {id(m.truth): m for m in r.matches}
        for t in r.truths:
            if t.type != "decode_error":
                continue
            label = f"{t.params.get('injected')} in {r.plan.ext.lstrip('.').upper()}"
            n, k, errs = rows.get(label, (0, 0, []))
            m = matched.get(id(t))
            rows[label] = (n + 1, k + (m is not None), [*errs, *([m.start_error] if m else [])])
    return [(label, n, k, errs) for label, (n, k, errs) in sorted(rows.items())]


def by_encoder(results: Sequence[ClipResult]) -> list[tuple[str, int, int, int, list[float]]]:
    """(encoder, truths, matched, false positives, start errors) of the re-encoded defect clips."""
    rows: dict[str, tuple[int, int, int, list[float]]] = {}
    for r in results:
        if not r.plan.encoder:
            continue
        n, k, fp, errs = rows.get(r.plan.encoder, (0, 0, 0, []))
        rows[r.plan.encoder] = (
            n + len(r.truths),
            k + len(r.matches),
            fp + len(r.false),
            [*errs, *(m.start_error for m in r.matches)],
        )
    return [(ENCODERS[name].what, *rows[name]) for name in ENCODERS if name in rows]


def by_cli_format(results: Sequence[ClipResult]) -> list[tuple[str, str, TypeFigures]]:
    """(format, defect type, figures) of the ffmpeg CLI corpus, clean clips included."""
    rows: list[tuple[str, str, TypeFigures]] = []
    for fmt_name, fmt in CLI_FORMATS.items():
        mine = [r for r in results if r.plan.cli.split("/")[0] == fmt_name]
        for name, fig in figures(mine).items():
            if fig.truths or fig.found:
                rows.append((fmt.what, name, fig))
    return rows
