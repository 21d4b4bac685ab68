"""Throughput: decode only, decode with the detectors' views, and the full pipeline.

The full pipeline is ``worker.session.analyze`` (what ``avmon analyze`` and each worker thread
run): open, demux, decode, luma views, audio resampling, every registered detector, defect
records. Its throughput is reported as a ratio to decoding alone with the same thread settings,
measured in the same rounds (see :mod:`bench.timing`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.clips import Clip, decode
from bench.timing import Paired, paired
from shared.models import Defect
from worker.session import analyze

DECODE, VIEWS, PIPELINE = "decode only", "decode + views", "full pipeline"


def run_pipeline(url: str) -> int:
    """``analyze`` on the source; returns the number of defect records it emitted."""
    records: list[Defect] = []
    analyze(url, records.append)
    return len(records)


@dataclass
class Throughput:
    clip: Clip
    result: Paired

    def wall_s(self, variant: str) -> float:
        return self.result.series[variant].wall_s

    def cpu_s(self, variant: str) -> float:
        return self.result.series[variant].cpu_s

    def fps(self, variant: str) -> float:
        """Pictures per wall second."""
        return self.clip.frames / self.wall_s(variant)

    def realtime(self, variant: str) -> float:
        """Media seconds per wall second (the process may use both cores)."""
        return self.clip.duration_s / self.wall_s(variant)

    def realtime_per_core(self, variant: str) -> float:
        """Media seconds per CPU second: how many real-time streams one core could carry."""
        return self.clip.duration_s / self.cpu_s(variant)

    def throughput_ratio(self, variant: str, *, cpu: bool) -> float:
        """Throughput of ``variant`` relative to decode only (median over rounds): > 1 is faster."""
        return 1.0 / self.result.ratio(variant, cpu=cpu)


def measure_throughput(clip: Clip, repeats: int) -> Throughput:
    # Warm up: imports (the loudness detector pulls in scipy), detector discovery, codec setup.
    run_pipeline(clip.url)
    decode(clip.url, views=True)
    variants = {
        DECODE: lambda: decode(clip.url, views=False),
        VIEWS: lambda: decode(clip.url, views=True),
        PIPELINE: lambda: run_pipeline(clip.url),
    }
    return Throughput(clip, paired(variants, DECODE, repeats))
