"""Reading media back: the worker's own decode path feeding detectors, and MPEG-TS packet offsets
for tests that damage a clip's transport."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from worker.decoded import ANALYSIS_RATE, AudioBatcher, AudioConverter, luma_view
from worker.detectors.base import AudioBlock, Detector, Finding, VideoFrame


def decode(path: Path, *detectors: Detector) -> list[Finding]:
    """Every finding of ``detectors`` on the file at ``path``, decoded as the session does (media
    time from the first timestamp of the file, audio at the analysis rate in batched blocks)."""
    findings: list[Finding] = []

    def feed(item: VideoFrame | AudioBlock) -> None:
        for detector in detectors:
            if isinstance(item, VideoFrame):
                findings.extend(detector.feed_video(item))
            else:
                findings.extend(detector.feed_audio(item))

    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        selected = [s for s in (video, audio) if s is not None]
        starts = [
            float(s.start_time * s.time_base) for s in selected if s.start_time is not None and s.time_base
        ]
        origin = min(starts) if starts else 0.0
        converter = AudioConverter(audio.codec_context.channels or 2) if audio is not None else None
        batcher = AudioBatcher()
        last_t = 0.0
        for frame in container.decode(*selected):
            if not isinstance(frame, av.VideoFrame | av.AudioFrame):
                continue
            if frame.pts is None or frame.time_base is None:
                continue
            t = float(frame.pts * frame.time_base) - origin
            if isinstance(frame, av.VideoFrame):
                luma, full_range = luma_view(frame)
                feed(
                    VideoFrame(
                        t=t,
                        luma=luma,
                        full_range=full_range,
                        key_frame=frame.key_frame,
                        corrupt=frame.is_corrupt,
                    )
                )
            elif converter is not None:
                for samples in converter.convert(frame):
                    for block in batcher.add(t, samples, converter.names):
                        feed(block)
                    t += samples.shape[1] / ANALYSIS_RATE
            last_t = max(last_t, t)
        pending: AudioBlock | None = batcher.drain()
        if pending is not None:
            feed(pending)
    for detector in detectors:
        findings += detector.flush(last_t)
    return findings


def transport_packets(data: bytes, pos: int) -> list[int]:
    """Offsets of the 188-byte MPEG-TS packets that carry the PES starting at byte ``pos``."""
    assert data[pos] == 0x47, "a demuxed packet's pos is the transport packet where its PES starts"
    pid = (data[pos + 1] & 0x1F) << 8 | data[pos + 2]
    offsets = [pos]
    for off in range(pos + 188, len(data) - 187, 188):
        if (data[off + 1] & 0x1F) << 8 | data[off + 2] == pid:
            if data[off + 1] & 0x40:  # payload_unit_start_indicator: the next PES begins
                break
            offsets.append(off)
    return offsets


def remux(
    source: Path,
    target: Path,
    edit: Callable[[av.Packet[Any]], bool] | None = None,
    *,
    keep: str = "all",
    format: str | None = None,
) -> None:
    """Copy the packets of ``source`` (``keep``: "all", "video" or "audio" streams) to ``target``
    (``format``: None, from its suffix) without decoding: a transport-level change to a clip.
    ``edit`` sees each packet first and may change it, or return False to leave it out; the
    demuxer's flush packets (no decode time) are left out."""
    with av.open(str(source)) as inp, av.open(str(target), "w", format=format) as out:
        by_kind = {"all": list(inp.streams), "video": inp.streams.video[:1], "audio": inp.streams.audio[:1]}
        selected = by_kind[keep]
        streams = {s.index: out.add_stream_from_template(s) for s in selected}
        for packet in inp.demux(*selected):
            if packet.dts is None or (edit is not None and not edit(packet)):
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
