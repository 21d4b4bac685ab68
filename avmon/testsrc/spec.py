"""``SignalSpec``: everything that determines the media, and the frame/sample timing derived
from it (defect spans, keyframes, sync marks, timestamp jumps, signal losses)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypedDict

from avmon.testsrc.script import LIVE_ONLY_TYPES, SYNC_TYPES, DefectSpec, validate_defects

MARK_PHASE_S = 0.5  # sync marks at the first frame at or after k + 0.5 s
BEEP_S = 0.04  # length (s) of a sync mark's beep
# Beep edges: raised cosines of 2 ms centred on the nominal start and end. A hard edge makes the
# AAC encoder's pre-echo move the measured onset by up to 2.4 ms (measured); 2 ms edges keep it
# under 0.7 ms, and the envelope still crosses half amplitude exactly at the flash time.
BEEP_EDGE_S = 0.002


def first_index(t: float, rate: int) -> int:
    """Smallest index n (frame or sample) whose time n / rate is >= t seconds."""
    n = math.ceil(t * rate)
    # n / rate is correctly rounded, so these compare exactly against t as given.
    while n > 0 and (n - 1) / rate >= t:
        n -= 1
    while n / rate < t:
        n += 1
    return n


class Media(TypedDict, total=False):
    """The keyword arguments of ``generate`` and ``LiveSource.start`` that make their
    ``SignalSpec`` (defaults as there)."""

    duration_s: float  # seconds of media, >= 0.5 (30)
    defects: Sequence[DefectSpec]  # e.g. from parse_script (none)
    seed: int  # content seed: same seed, same media (0)
    width: int  # picture width in pixels, even, >= 16 (640)
    height: int  # picture height in pixels, even, >= 16 (360)
    fps: int  # frames per second (25)
    sample_rate: int  # audio samples per second, >= 8000 (48000)
    channels: int  # 1 or 2 (2)
    gop_s: float  # keyframe interval in seconds (2.0)
    sync_marks: bool  # a white frame and a beep once a second (False)


@dataclass(frozen=True)
class SignalSpec:
    """Everything that determines the media; checked on construction, defects normalised."""

    duration_s: float = 30.0
    defects: Sequence[DefectSpec] = ()  # any order: stored sorted, as a tuple, defaults filled in
    seed: int = 0
    width: int = 640
    height: int = 360
    fps: int = 25
    sample_rate: int = 48000
    channels: int = 2
    gop_s: float = 2.0
    sync_marks: bool = False

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError(f"size {self.width}x{self.height}: width and height must be even and >= 16")
        if self.fps <= 0 or self.sample_rate < 8000 or self.channels not in (1, 2) or self.gop_s <= 0:
            raise ValueError("fps must be > 0, sample_rate >= 8000, channels 1 or 2, gop_s > 0")
        if not self.duration_s >= 0.5:
            raise ValueError("duration_s must be >= 0.5")
        defects = tuple(validate_defects(self.defects, self.duration_s))
        object.__setattr__(self, "defects", defects)
        if not self.sync_marks and any(d.type in SYNC_TYPES for d in defects):
            raise ValueError(
                "av_offset and av_drift need sync marks (--sync-marks): nothing else in the "
                "content ties the sound to the picture"
            )

    def check_output(self, *, live: bool) -> None:
        if not live and any(d.type in LIVE_ONLY_TYPES for d in self.defects):
            raise ValueError("signal_loss needs a live output (--udp, --hls, --rtmp): a file cannot pause")

    def of(self, *types: str) -> list[DefectSpec]:
        return [d for d in self.defects if d.type in types]

    def frames(self, d: DefectSpec) -> tuple[int, int]:
        """Frame range [a, b) a defect covers."""
        return first_index(d.start_s, self.fps), first_index(d.end_s, self.fps)

    @property
    def n_frames(self) -> int:
        return first_index(self.duration_s, self.fps)

    @property
    def n_samples(self) -> int:
        return first_index(self.duration_s, self.sample_rate)

    @property
    def gop(self) -> int:
        return max(1, round(self.gop_s * self.fps))

    @cached_property
    def jumps(self) -> tuple[tuple[int, int], ...]:
        """(first frame, frames added) of each timestamp jump."""
        return tuple(
            (first_index(d.start_s, self.fps), max(1, round(d.params["jump_s"] * self.fps)))
            for d in self.of("timestamp_jump")
        )

    def container_s(self, t: float) -> float:
        """Media time a monitor measures for content time t: later by every jump at or before t."""
        return t + sum(n for j, n in self.jumps if t >= j / self.fps) / self.fps

    def content_s(self, c: float) -> float:
        """Inverse of ``container_s`` (jumps only go forward, so it is unambiguous)."""
        shift = 0.0
        for j, n in self.jumps:
            if c - shift >= (j + n) / self.fps:
                shift += n / self.fps
        return c - shift

    @cached_property
    def loss_frames(self) -> tuple[tuple[int, int], ...]:
        return tuple(self.frames(d) for d in self.of("signal_loss"))

    def lost(self, kind: str, t: float) -> int | None:
        """Which signal loss (index) withholds the packet of ``kind`` at content time t, if any."""
        i = round(t * self.fps)
        for k, (a, b) in enumerate(self.loss_frames):
            if (a <= i < b) if kind == "video" else (a / self.fps <= t < b / self.fps):
                return k
        return None

    @cached_property
    def forced_keyframes(self) -> frozenset[int]:
        """IDRs at jumps and at both ends of each signal loss, so no picture references across."""
        return frozenset([j for j, _ in self.jumps] + [i for ab in self.loss_frames for i in ab])

    @cached_property
    def keyframes(self) -> tuple[int, ...]:
        """x264's keyframes: every ``gop`` frames, counting again from each forced one."""
        keys: list[int] = []
        for i in range(self.n_frames):
            if not keys or i in self.forced_keyframes or i - keys[-1] >= self.gop:
                keys.append(i)
        return tuple(keys)

    @cached_property
    def mark_frames(self) -> tuple[int, ...]:
        if not self.sync_marks:
            return ()
        frames = (first_index(k + MARK_PHASE_S, self.fps) for k in itertools.count())
        end = self.duration_s - BEEP_S - BEEP_EDGE_S
        return tuple(itertools.takewhile(lambda i: i / self.fps <= end, frames))

    def offset_ms(self, t: float) -> float:
        """Audio delay (ms) an av_offset/av_drift applies at media time t (0 outside)."""
        for d in self.of(*SYNC_TYPES):
            if d.start_s <= t < d.end_s:
                return d.params.get("offset_ms", 0.0) + d.params.get("ms_per_s", 0.0) * (t - d.start_s)
        return 0.0
