"""Throughput: decode only, decode with the detectors' views, and the full pipeline.

The full pipeline is ``worker.session.analyze`` (what ``avmon analyze`` and each worker thread
run): open, demux, decode, luma views, audio resampling, every registered detector, defect
records. Its throughput is reported as a ratio to decoding alone with the same thread settings,
measured in the same rounds (see :mod:`bench.timing`): for one stream alone (the time
``avmon analyze`` takes on a file) and for twice as many streams as cores at once, one thread
each, as a worker runs them (the machine's throughput: what bounds streams per worker).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from bench.clips import Clip, decode
from bench.timing import Paired, paired
from shared.models import Defect
from shared.urlpolicy import to_url
from worker.media import Limits
from worker.session import SessionConfig, StreamSession

DECODE, VIEWS, PIPELINE = "decode only", "decode + views", "full pipeline"
# The same work for several streams at once, one thread each, as a worker runs them: twice as
# many streams as cores keeps every core busy, so wall time is the machine's throughput.
FULL_STREAMS = 2 * (os.cpu_count() or 1)
DECODE_FULL = f"decode only, {FULL_STREAMS} streams at once"
PIPELINE_FULL = f"full pipeline, {FULL_STREAMS} streams at once"
BASELINES = {
    DECODE: DECODE,
    VIEWS: DECODE,
    PIPELINE: DECODE,
    DECODE_FULL: DECODE_FULL,
    PIPELINE_FULL: DECODE_FULL,
}


def at_once(run: Callable[[], object], streams: int) -> None:
    """``run`` in ``streams`` threads at the same time; the first error of any is raised."""
    errors: list[BaseException] = []

    def one() -> None:
        try:
            run()
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def run_pipeline(url: str) -> int:
    """The full pipeline on the source, with the decoder threads decode-only uses here
    (``Limits().decode_threads``, as bench.clips opens it), not ``avmon analyze``'s own count
    (it gives its one stream every core): the ratio compares like with like. Returns the
    number of defect records it emitted."""
    records: list[Defect] = []
    config = SessionConfig(url=to_url(url), reconnect=False, decode_threads=Limits().decode_threads)
    StreamSession("bench", config, lambda defect, _: records.append(defect)).run()
    return len(records)


@dataclass
class Throughput:
    clip: Clip
    result: Paired

    @staticmethod
    def streams(variant: str) -> int:
        return FULL_STREAMS if variant in (DECODE_FULL, PIPELINE_FULL) else 1

    def wall_s(self, variant: str) -> float:
        return self.result.series[variant].wall_s

    def cpu_s(self, variant: str) -> float:
        return self.result.series[variant].cpu_s

    def fps(self, variant: str) -> float:
        """Pictures per wall second (of every stream the variant runs)."""
        return self.streams(variant) * self.clip.frames / self.wall_s(variant)

    def realtime(self, variant: str) -> float:
        """Media seconds per wall second (the process may use both cores)."""
        return self.streams(variant) * self.clip.duration_s / self.wall_s(variant)

    def realtime_per_core(self, variant: str) -> float:
        """Media seconds per CPU second: how many real-time streams one core could carry."""
        return self.streams(variant) * self.clip.duration_s / self.cpu_s(variant)

    def throughput_ratio(self, variant: str, *, cpu: bool) -> float:
        """Throughput of ``variant`` relative to decoding the same streams (median over rounds):
        > 1 is faster."""
        return 1.0 / self.result.ratio(variant, cpu=cpu, baseline=BASELINES[variant])


def measure_throughput(clip: Clip, repeats: int) -> Throughput:
    # Warm up: imports (the loudness detector pulls in scipy), detector discovery, codec setup.
    run_pipeline(clip.url)
    decode(clip.url, views=True)
    variants = {
        DECODE: lambda: decode(clip.url, views=False),
        VIEWS: lambda: decode(clip.url, views=True),
        PIPELINE: lambda: run_pipeline(clip.url),
        DECODE_FULL: lambda: at_once(lambda: decode(clip.url, views=False), FULL_STREAMS),
        PIPELINE_FULL: lambda: at_once(lambda: run_pipeline(clip.url), FULL_STREAMS),
    }
    return Throughput(clip, paired(variants, DECODE, repeats))
