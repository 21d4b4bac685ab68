"""Report sections on speed: throughput, per-detector cost, the pipeline's breakdown, FFmpeg's
filters and the profile."""

from __future__ import annotations

from bench import breakdown, ffmpeg
from bench.report.markdown import f, table
from bench.report.results import Results
from bench.timing import median
from worker.decoded import ANALYSIS_RATE, AUDIO_BATCH_SAMPLES


def throughput_section(r: Results) -> str:
    parts = [
        "Same media, same decode settings (`thread_type=AUTO`, "
        "`thread_count=Limits().decode_threads`), variants run back to back in rotating order; "
        "medians over rounds. *Real time ×*: media seconds per wall second; *per core*: media "
        "seconds per CPU second (all threads), i.e. how many real-time streams one core carries. "
        "*Throughput ÷ decode*: median over rounds of decode time ÷ variant time (for the rows "
        "with several streams at once, decoding as many streams at once)."
    ]
    for t in r.throughput:
        rounds = len(next(iter(t.result.series.values())).samples)
        rows = [
            [
                v,
                f(t.wall_s(v)),
                f(t.cpu_s(v)),
                f(t.fps(v), 0),
                f(t.realtime(v), 1),
                f(t.realtime_per_core(v), 1),
                f(t.throughput_ratio(v, cpu=False)),
                f(t.throughput_ratio(v, cpu=True)),
            ]
            for v in t.result.series
        ]
        parts.append(
            f"**{t.clip.label}** ({t.clip.width}x{t.clip.height}, {t.clip.fps} fps, "
            f"{t.clip.duration_s:g} s, H.264 High + AAC-LC stereo in MPEG-TS; {rounds} rounds)\n\n"
            + table(
                [
                    "variant",
                    "wall s",
                    "CPU s",
                    "pictures/s",
                    "real time ×",
                    "real time × per core",
                    "throughput ÷ decode (wall)",
                    "(CPU)",
                ],
                rows,
            )
        )
    return "\n\n".join(parts)


def detectors_section(r: Results) -> str:
    parts = [
        "Each detector alone, fed pictures and audio blocks decoded once into memory (luma views "
        "of the decoder's buffers, audio resampled to 48 kHz float32 and joined into blocks of at "
        f"least {1000 * AUDIO_BATCH_SAMPLES // ANALYSIS_RATE} ms, as the session feeds them); CPU "
        "time of the process, medians over rounds. "
        "*Share of decode*: the detector's CPU per media second ÷ decoding's (decode only, the "
        "session's threads), measured in the same round. This is the detectors' own work; in the "
        "pipeline (previous section) the same work costs more, sharing two cores with the "
        "decoder's threads."
    ]
    for d in r.detectors:
        rows = []
        for name, cost in d.detectors.items():
            rows.append(
                [
                    name,
                    f(median(cost.video_us_per_picture), 1),
                    f(median(cost.audio_us_per_s), 0),
                    f"{median(cost.share_of_decode):.1%}",
                ]
            )
        rows.append(["**all**", "", "", f"**{d.share:.1%}**"])
        parts.append(
            f"**{d.clip.label}**: first {d.seconds:g} s ({d.pictures} pictures, {d.audio_s:.1f} s of "
            f"audio); decoding costs {f(d.decode_us, 0)} µs CPU per picture "
            f"({len(d.total_share)} rounds)\n\n"
            + table(["detector", "µs per picture", "µs per s of audio", "share of decode"], rows)
        )
    return "\n\n".join(parts)


def breakdown_section(r: Results) -> str:
    b = r.breakdown
    assert b is not None
    rounds = len(b.result.series[breakdown.DECODE].samples)
    rows = [
        [
            "session, no detector (luma views, audio resampling, the loop)",
            "decode only",
            f(b.us_per_picture(breakdown.NONE, breakdown.DECODE), 0),
            f"{b.share_of_decode(breakdown.NONE, breakdown.DECODE):.1%}",
        ]
    ]
    rows += [
        [name, "no detector", f(b.us_per_picture(name), 0), f"{b.share_of_decode(name):.1%}"]
        for name in b.detectors
    ]
    alone = sum(b.us_per_picture(name) for name in b.detectors)
    decode_us = b.result.series[breakdown.DECODE].cpu_s / b.clip.frames * 1e6
    rows.append(["*sum of the detectors alone*", "no detector", f(alone, 0), f"{alone / decode_us:.1%}"])
    rows.append(
        [
            breakdown.ALL,
            "no detector",
            f(b.us_per_picture(breakdown.ALL), 0),
            f"{b.share_of_decode(breakdown.ALL):.1%}",
        ]
    )
    ratio = b.result.ratio(breakdown.ALL, cpu=True)
    return (
        f"The session (`StreamSession.run`) on the {b.clip.label} clip with no detector, each "
        f"detector alone, and all of them ({rounds} rounds, CPU of the process, medians): each "
        "variant's cost beyond the one in the second column, in µs per picture and as a share of "
        "decoding. Costs here include what isolation hides: pictures straight from the decoder, "
        "the decoder's threads and the detectors sharing two cores. "
        "Each row is the difference of two totals measured on a shared machine: a single "
        "detector's row is good to a few % of decode either way (a small negative value is "
        "noise); the totals are firmer.\n\n"
        + table(["variant", "beyond", "µs CPU per picture", "share of decode"], rows)
        + f"\n\nFull pipeline throughput ÷ decode only (CPU), in these rounds: **{f(1 / ratio)}×**."
    )


def ffmpeg_section(r: Results) -> str:
    video = " → ".join(f"{n}={a}" if a else n for n, a in ffmpeg.VIDEO_FILTERS)
    audio = " → ".join(f"{n}={a}" if a else n for n, a in ffmpeg.AUDIO_FILTERS)
    parts = [
        f"FFmpeg's own detector filters through PyAV's bundled libavfilter (`av.filter.Graph`, "
        f"graph threads = decode threads): video `buffer → {video} → buffersink`, audio "
        f"`abuffer → {audio} → abuffersink`. Every decoded frame is pushed and every output "
        "pulled, in the same decode loop. *vs decode*: variant time ÷ decode-only time."
    ]
    for c in r.ffmpeg:
        rows = [
            [
                v,
                f(c.result.series[v].wall_s),
                f(c.result.series[v].cpu_s),
                f(c.result.ratio(v, cpu=False)),
                f(c.result.ratio(v, cpu=True)),
            ]
            for v in c.result.series
        ]
        text = (
            f"**{c.clip.label}** ({len(c.result.series[ffmpeg.DECODE].samples)} rounds): the full "
            f"pipeline's throughput is **{f(c.pipeline_vs_ffmpeg)}×** that of FFmpeg's filter chain "
            f"(CPU; {f(c.pipeline_vs_ffmpeg_wall)}× wall).\n\n"
            + table(["variant", "wall s", "CPU s", "time ÷ decode (wall)", "(CPU)"], rows)
        )
        if c.per_filter:
            decode_per_s = c.result.series[ffmpeg.DECODE].cpu_s / c.clip.duration_s
            filter_rows = [
                [name, f(cost * 1e3, 1), f"{cost / decode_per_s:.1%}"] for name, cost in c.per_filter.items()
            ]
            text += (
                "\n\nEach filter alone (CPU over decode only, per media second; "
                "small negative values are noise):\n\n"
                + table(["filter", "ms CPU per media s", "share of decode"], filter_rows)
            )
        parts.append(text)
    return "\n\n".join(parts)


def profile_section(r: Results) -> str:
    p = r.profile
    assert p is not None
    total = sum(t for _, t in p.loop) or 1.0
    loop = [[name, f(t, 3), f"{t / total:.1%}"] for name, t in p.loop[:12]]
    top = [[name, f(t, 3)] for name, t in p.top_self]
    return (
        f"pyinstrument (0.5 ms sampling) over `analyze()` on the {p.clip.label} clip: "
        f"{p.duration_s:.1f} s, {p.samples} samples. Full text: `{p.text_path.name}` in `bench/out/`. "
        "`Packet.decode` is wall time in the session's thread, including waits for the decoder's "
        "other thread.\n\nWhere the session's and the reader's loops (`StreamSession.run`, "
        "`MediaReader._decode`) spend their time:\n\n"
        + table(["callee", "s", "share"], loop)
        + "\n\nMost self time:\n\n"
        + table(["function", "self s"], top)
    )
