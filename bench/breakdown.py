"""Where the full pipeline's CPU goes, measured in the pipeline itself, by subtraction.

The session runs with no detector, with each detector alone (``SessionConfig.detectors``) and
with all of them; each variant's CPU time less the session's without detectors is that
detector's cost *in the pipeline* (with the decoder's threads running alongside, pictures
straight from the decoder), as opposed to :mod:`bench.detectors`' cost in isolation. OpenCV
runs single-threaded, as in the worker (:mod:`worker.media` sets it at import).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from bench.clips import Clip, decode
from bench.timing import Paired, paired
from shared.models import Defect
from worker.detectors import registry
from worker.session import SessionConfig, StreamSession

DECODE, NONE, ALL = "decode only", "session, no detector", "all detectors"
NO_DETECTOR = frozenset({"-"})  # a name no detector has: the session builds none


def run_session(url: str, detectors: frozenset[str] | None) -> int:
    records: list[Defect] = []
    config = SessionConfig(url=url, reconnect=False, detectors=detectors)
    StreamSession("bench", config, lambda defect, _: records.append(defect)).run()
    return len(records)


@dataclass
class Breakdown:
    clip: Clip
    result: Paired

    def us_per_picture(self, variant: str, over: str = NONE) -> float:
        """CPU µs per picture of ``variant`` beyond ``over`` (medians of the rounds)."""
        series = self.result.series
        return (series[variant].cpu_s - series[over].cpu_s) / self.clip.frames * 1e6

    def share_of_decode(self, variant: str, over: str = NONE) -> float:
        decode_us = self.result.series[DECODE].cpu_s / self.clip.frames * 1e6
        return self.us_per_picture(variant, over) / decode_us

    @property
    def detectors(self) -> list[str]:
        return [v for v in self.result.series if v not in (DECODE, NONE, ALL)]


def measure_breakdown(clip: Clip, repeats: int) -> Breakdown:
    run_session(clip.url, None)  # warm-up
    variants: dict[str, Callable[[], object]] = {
        DECODE: lambda: decode(clip.url, views=False),
        NONE: lambda: run_session(clip.url, NO_DETECTOR),
    }
    for name in registry():
        variants[name] = functools.partial(run_session, clip.url, frozenset({name}))
    variants[ALL] = lambda: run_session(clip.url, None)
    return Breakdown(clip, paired(variants, DECODE, repeats))
