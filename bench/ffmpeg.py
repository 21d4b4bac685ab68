"""Against FFmpeg: the same media through FFmpeg's own detector filters (PyAV's libavfilter).

Video: ``buffer → blackdetect → freezedetect → blockdetect → buffersink``; audio: ``abuffer →
silencedetect → ebur128 → astats → abuffersink``, with options matching the detectors' defaults
where the filters have them (black: d=2, pic_th=0.98, pix_th=0.10; freeze: n=-60 dB, d=2;
silence: n=-60 dB, d=2; ebur128 with true peak, as the clipping and loudness detectors measure;
astats with per-frame metadata). Every decoded frame is pushed and every filtered frame pulled,
in the same decode loop and thread settings as the session; the graph's own thread count is
set to the decoder's. Timed in rounds against decode only and against the full pipeline.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av

from bench.clips import Clip, open_media
from bench.throughput import run_pipeline
from bench.timing import Paired, paired
from worker.media import Limits

VIDEO_FILTERS: tuple[tuple[str, str], ...] = (
    ("blackdetect", "d=2:pic_th=0.98:pix_th=0.10"),
    ("freezedetect", "n=-60dB:d=2"),
    ("blockdetect", ""),
)
AUDIO_FILTERS: tuple[tuple[str, str], ...] = (
    ("silencedetect", "n=-60dB:d=2"),
    ("ebur128", "metadata=1:peak=true"),
    ("astats", "metadata=1:reset=1"),
)
DECODE, FFMPEG, PIPELINE = "decode only", "decode + FFmpeg filters", "full pipeline"


def _chain(graph: Any, source: Any, filters: tuple[tuple[str, str], ...], sink: str) -> tuple[Any, Any]:
    nodes = [source] + [graph.add(name, args or None) for name, args in filters] + [graph.add(sink)]
    graph.link_nodes(*nodes)
    return source, nodes[-1]


def _drain(sink: Any) -> int:
    pulled = 0
    while True:
        try:
            sink.pull()
        except (av.BlockingIOError, av.EOFError):
            return pulled
        pulled += 1


def decode_with_filters(
    url: str,
    video_filters: tuple[tuple[str, str], ...] = VIDEO_FILTERS,
    audio_filters: tuple[tuple[str, str], ...] = AUDIO_FILTERS,
) -> int:
    """Decode the source and run every frame through FFmpeg's filters; returns frames pulled."""
    pulled = 0
    with open_media(url) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        graph = av.filter.Graph()
        graph.threads = Limits().decode_threads
        routes: dict[Any, tuple[Any, Any]] = {}
        if video_filters:
            routes[video] = _chain(graph, graph.add_buffer(template=video), video_filters, "buffersink")
        if audio_filters:
            routes[audio] = _chain(graph, graph.add_abuffer(template=audio), audio_filters, "abuffersink")
        graph.configure()
        for packet in container.demux(video, audio):
            route = routes.get(packet.stream)
            for frame in packet.decode():
                if route is not None:
                    route[0].push(frame)
                    pulled += _drain(route[1])
    return pulled


@dataclass
class FfmpegComparison:
    clip: Clip
    result: Paired
    per_filter: dict[str, float]  # filter → its CPU time over decode only, per media second

    @property
    def pipeline_vs_ffmpeg(self) -> float:
        """Throughput of the full pipeline relative to decode + FFmpeg filters (CPU): > 1 is ahead."""
        return self.result.ratio(FFMPEG, cpu=True) / self.result.ratio(PIPELINE, cpu=True)

    @property
    def pipeline_vs_ffmpeg_wall(self) -> float:
        return self.result.ratio(FFMPEG, cpu=False) / self.result.ratio(PIPELINE, cpu=False)


def compare_with_ffmpeg(clip: Clip, repeats: int, *, per_filter: bool) -> FfmpegComparison:
    decode_with_filters(clip.url)  # warm-up
    variants = {
        DECODE: lambda: decode_with_filters(clip.url, (), ()),
        FFMPEG: lambda: decode_with_filters(clip.url),
        PIPELINE: lambda: run_pipeline(clip.url),
    }
    result = paired(variants, DECODE, repeats)
    costs: dict[str, float] = {}
    if per_filter:
        singles: dict[str, Callable[[], object]] = {DECODE: variants[DECODE]}
        for f in VIDEO_FILTERS:
            singles[f[0]] = functools.partial(decode_with_filters, clip.url, (f,), ())
        for f in AUDIO_FILTERS:
            singles[f[0]] = functools.partial(decode_with_filters, clip.url, (), (f,))
        alone = paired(singles, DECODE, max(1, repeats // 2))
        base = alone.series[DECODE].cpu_s
        for name in singles:
            if name != DECODE:
                costs[name] = (alone.ratio(name, cpu=True) - 1.0) * base / clip.duration_s
    return FfmpegComparison(clip, result, costs)
