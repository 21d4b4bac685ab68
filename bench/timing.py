"""Measuring on a noisy machine: paired runs in one process, repeated, medians of ratios.

Other people's tests run on the same two cores, so absolute times drift from minute to minute.
Every comparison here runs its variants back to back, in rotating order, ``repeats`` times; each
round gives one ratio to the round's baseline, and the median of those ratios is reported. Wall
time (``perf_counter``) and CPU time of the whole process (``process_time``: every thread,
including the decoder's and OpenCV's) are both kept.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float


@dataclass
class Series:
    """Repeated samples of one variant."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def cpu_s(self) -> float:
        return statistics.median(s.cpu_s for s in self.samples)


def measure(fn: Callable[[], object]) -> Sample:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Sample(time.perf_counter() - wall, time.process_time() - cpu)


@dataclass
class Paired:
    """Results of :func:`paired`: each variant's series, and ratios to the baseline per round."""

    baseline: str
    series: dict[str, Series]

    def ratio(self, name: str, *, cpu: bool, baseline: str | None = None) -> float:
        """Median over rounds of ``time(name) / time(baseline)`` (wall or CPU); the baseline is
        the one :func:`paired` was given unless another variant is named."""
        base = self.series[baseline or self.baseline].samples
        other = self.series[name].samples
        ratios = [
            (o.cpu_s / b.cpu_s) if cpu else (o.wall_s / b.wall_s)
            for b, o in zip(base, other, strict=True)
            if (b.cpu_s if cpu else b.wall_s) > 0
        ]
        return statistics.median(ratios) if ratios else float("nan")


def paired(variants: Mapping[str, Callable[[], object]], baseline: str, repeats: int) -> Paired:
    """Run every variant once per round, rotating the order; ``repeats`` rounds."""
    names = list(variants)
    result = Paired(baseline, {name: Series() for name in names})
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            result.series[name].samples.append(measure(variants[name]))
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
