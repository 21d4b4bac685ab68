"""The defect script: ``DefectSpec`` items parsed from ``TYPE@START+DURATION[:k=v]`` text and
checked, and the ``GroundTruth`` file written beside the media (see the package docstring)."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VIDEO_TYPES = frozenset({"black", "freeze"})
AUDIO_TYPES = frozenset({"silence", "clipping", "loudness"})
SYNC_TYPES = frozenset({"av_offset", "av_drift"})
TRANSPORT_TYPES = frozenset({"corrupt", "drop", "timestamp_jump", "signal_loss"})
DEFECT_TYPES = VIDEO_TYPES | AUDIO_TYPES | SYNC_TYPES | TRANSPORT_TYPES
LIVE_ONLY_TYPES = frozenset({"signal_loss"})
INSTANT_TYPES = frozenset({"timestamp_jump"})  # a point in time: duration 0
# What a monitor reports (DESIGN.md §4) for a scripted type, where the names differ.
TRUTH_TYPES = {
    "av_offset": "av_sync",
    "av_drift": "av_sync",
    "corrupt": "decode_error",
    "drop": "decode_error",
}
# Allowed params per type, with defaults (None: required or "absent means default behaviour").
_PARAMS: dict[str, dict[str, float | None]] = {
    "black": {},
    "freeze": {},
    "silence": {"level_dbfs": None},
    "clipping": {"gain_db": 26.0},
    "loudness": {"gain_db": None},
    "av_offset": {"offset_ms": None},
    "av_drift": {"ms_per_s": None},
    "corrupt": {"rate": 0.3},
    "drop": {"rate": 0.1},
    "timestamp_jump": {"jump_s": 10.0},
    "signal_loss": {},
}
MAX_SYNC_OFFSET_MS = 1000.0


@dataclass(frozen=True)
class DefectSpec:
    """One scripted defect: ``type`` from DEFECT_TYPES, media times in seconds."""

    type: str
    start_s: float
    duration_s: float  # 0 for INSTANT_TYPES
    params: dict[str, float] = field(default_factory=dict)  # e.g. {"gain_db": -20} for loudness

    @property
    def end_s(self) -> float:
        # Rounded so that 0.1 + 0.2 is 0.3: the truth and the frame selection use this value.
        return round(self.start_s + self.duration_s, 9)


@dataclass
class GroundTruth:
    """What ``generate`` put in the media. Times are media seconds (see the package docstring)."""

    source: str  # the file, or the URL of a live source
    duration_s: float
    seed: int
    width: int
    height: int
    fps: int
    sample_rate: int
    channels: int
    gop_s: float
    origin_s: float  # container timestamp (s) of media time 0, e.g. 0.08 for TS (B-frame delay)
    audio_start_s: float  # media time (s) of the first generated sample; AAC priming before it
    scene_cuts_s: list[float]  # media times (s) of the content's own scene cuts (not defects)
    defects: list[dict[str, Any]]  # {"type", "start_s", "end_s", "params"}
    sync_marks_s: list[float] = field(default_factory=list)  # flash (and beep) times, if marks are on

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        return cls(**json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        """Read the truth of a media file, given the media path or the truth path itself."""
        p = Path(path)
        if not p.name.endswith(".truth.json"):
            p = truth_path(p)
        return cls.from_json(p.read_text())


def truth_path(media_path: str | Path) -> Path:
    """``clip.ts`` → ``clip.ts.truth.json``."""
    p = Path(media_path)
    return p.with_name(p.name + ".truth.json")


_ITEM_RE = re.compile(r"^(?P<type>[a-z_]+)@(?P<start>[^+:]+)(?:\+(?P<dur>[^:]+))?(?::(?P<params>.*))?$")


def _number(text: str, what: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"defect {item!r}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"defect {item!r}: {what} must be finite")
    return value


def parse_script(script: str) -> list[DefectSpec]:
    """Parse ``TYPE@START+DURATION[:k=v[:k=v]]`` items separated by commas (seconds), e.g.
    ``'black@5+3, freeze@12+4, silence@20+3, loudness@30+12:gain_db=-20'``. Empty → [].
    Instantaneous types may leave the duration out: ``timestamp_jump@20:jump_s=5``.
    Raises ValueError on unknown types or params, negative times, overlapping same-type defects."""
    if not script.strip():
        return []
    specs = []
    for raw in script.split(","):
        item = raw.strip()
        m = _ITEM_RE.match(item.replace(" ", ""))
        if not m or (m["dur"] is None and m["type"] not in INSTANT_TYPES):
            raise ValueError(
                f"bad defect {item!r}: expected TYPE@START+DURATION[:key=value...], "
                "e.g. black@5+3 or loudness@30+12:gain_db=-20"
            )
        params: dict[str, float] = {}
        for kv in m["params"].split(":") if m["params"] is not None else []:
            key, sep, val = kv.partition("=")
            if not sep or not key:
                raise ValueError(f"defect {item!r}: parameter {kv!r} is not key=value")
            if key in params:
                raise ValueError(f"defect {item!r}: parameter {key!r} given twice")
            params[key] = _number(val, f"parameter {key}", item)
        duration = 0.0 if m["dur"] is None else _number(m["dur"], "duration", item)
        specs.append(DefectSpec(m["type"], _number(m["start"], "start", item), duration, params))
    return validate_defects(specs)


def _check_params(s: DefectSpec, label: str, params: dict[str, float]) -> None:
    """Range checks of each type's parameters (defaults already filled in)."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"defect {label}: {what}")

    if s.type == "loudness":
        need(
            "gain_db" in params and -60 <= params["gain_db"] <= 30 and params["gain_db"] != 0,
            "loudness needs gain_db in [-60, 30], non-zero",
        )
    elif s.type == "clipping":
        need(18 <= params["gain_db"] <= 60, "clipping gain_db must be in [18, 60] to clip for sure")
    elif s.type == "silence":
        need(params.get("level_dbfs", -120) <= -70, "silence level_dbfs must be <= -70")
    elif s.type == "av_offset":
        need(
            "offset_ms" in params and 0 < abs(params["offset_ms"]) <= MAX_SYNC_OFFSET_MS,
            f"av_offset needs offset_ms, non-zero, within ±{MAX_SYNC_OFFSET_MS:g}",
        )
    elif s.type == "av_drift":
        need(
            "ms_per_s" in params
            and params["ms_per_s"] != 0
            and abs(params["ms_per_s"]) * s.duration_s <= MAX_SYNC_OFFSET_MS,
            f"av_drift needs ms_per_s, non-zero, reaching at most ±{MAX_SYNC_OFFSET_MS:g} ms",
        )
    elif s.type in ("corrupt", "drop"):
        need(0 < params["rate"] <= 1, f"{s.type} rate must be in (0, 1]")
    elif s.type == "timestamp_jump":
        need(
            0 < params["jump_s"] <= 3600,
            "timestamp_jump jump_s must be in (0, 3600] (muxers refuse timestamps that go back)",
        )


def _label(d: DefectSpec) -> str:
    return f"{d.type}@{d.start_s:g}+{d.duration_s:g}"


def validate_defects(specs: Sequence[DefectSpec], duration_s: float | None = None) -> list[DefectSpec]:
    """Check specs and return them sorted by start with default params filled in.
    With ``duration_s``, also require every defect to end within the media."""
    out = []
    for s in specs:
        label = _label(s)
        if s.type not in DEFECT_TYPES:
            raise ValueError(
                f"defect {label}: unknown type {s.type!r} (expected one of {', '.join(sorted(DEFECT_TYPES))})"
            )
        if s.start_s < 0 or not math.isfinite(s.start_s):
            raise ValueError(f"defect {label}: start must be >= 0 s")
        if s.type in INSTANT_TYPES:
            if s.duration_s != 0:
                raise ValueError(
                    f"defect {label}: {s.type} is instantaneous: duration must be 0 "
                    f"(write {s.type}@{s.start_s:g})"
                )
            if s.start_s == 0:
                raise ValueError(f"defect {label}: {s.type} needs a start > 0 s")
        elif s.duration_s <= 0 or not math.isfinite(s.duration_s):
            raise ValueError(f"defect {label}: duration must be > 0 s")
        if duration_s is not None and (s.end_s > duration_s or s.start_s >= duration_s):
            raise ValueError(f"defect {label}: ends at {s.end_s:g} s, after the media ({duration_s:g} s)")
        allowed = _PARAMS[s.type]
        unknown = set(s.params) - set(allowed)
        if unknown:
            raise ValueError(
                f"defect {label}: unknown parameter(s) {sorted(unknown)} "
                f"(allowed: {sorted(allowed) or 'none'})"
            )
        params = {k: float(v) for k, v in allowed.items() if v is not None} | dict(s.params)
        _check_params(s, label, params)
        out.append(DefectSpec(s.type, float(s.start_s), float(s.duration_s), params))

    def group(d: DefectSpec) -> str:
        return TRUTH_TYPES.get(d.type, d.type)

    out.sort(key=lambda s: (group(s), s.start_s))
    for a, b in itertools.pairwise(out):
        # Abutting defects of one type are rejected too: the media could not tell them apart.
        if group(a) == group(b) and b.start_s <= a.end_s:
            raise ValueError(f"defects {_label(a)} and {_label(b)} overlap or touch")
    for a, b in itertools.permutations(out, 2):
        if a.type == "signal_loss" and b.start_s < a.end_s and a.start_s < b.end_s:
            raise ValueError(f"defect {_label(b)} overlaps {_label(a)}: nothing is sent then")
        if a.type in INSTANT_TYPES and b.start_s < a.start_s < b.end_s:
            raise ValueError(f"defect {_label(a)} falls inside {_label(b)}")
    out.sort(key=lambda s: (s.start_s, s.type))
    return out
