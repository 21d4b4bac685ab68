"""Report sections on what a stream costs: streams per worker and memory, AWS requests, and the
per-frame design priced per stream-hour."""

from __future__ import annotations

from bench import aws_calls, capacity, prices
from bench.report.markdown import f, table, usd
from bench.report.results import Results, capacity_text, stream_hour_costs, streams_per_worker
from bench.timing import median


def capacity_section(r: Results) -> str:
    parts = [
        "Each run is a fresh process that runs N `StreamSession`s of the clip, paced in real "
        "time, one thread each (as the worker does), started over one second, and samples every "
        f"session's `figures.lag_s` every {capacity.SAMPLE_S} s. N is *sustained* when, over the "
        f"second half of the run, no stream's lag grows faster than {capacity.MAX_SLOPE} s/s and "
        f"none ends more than {capacity.MAX_LAG_S} s behind. *Others*: CPU the rest of the "
        "machine used during the run, in cores."
    ]
    if r.capacity is not None:
        rows = [
            [
                run.streams,
                "yes" if run.sustained else "no",
                f(run.final_lag_s),
                f(max(run.slopes()), 3),
                f(run.cpu_s / run.seconds),
                f(run.cpu_per_media_s, 3),
                f(run.others_cores),
                f(run.per_free_core(r.machine.cores), 1) if run.sustained else "",
                f(run.rss_per_stream_mb, 0),
                "; ".join(run.errors)[:200],
            ]
            for run in sorted(r.capacity.runs, key=lambda run: run.streams)
        ]
        parts.append(
            f"**Streams per worker**, {r.capacity_clip}: {capacity_text(r)}. The search started "
            f"at {r.capacity.estimate} ({r.machine.cores} cores × the pipeline's real time per "
            "core, less a margin); *decode alone* is the cores × decode-only real time per core. "
            "Other people's processes share this machine: *streams per free core* divides by the "
            "cores they left; *cores per real-time stream* is CPU time per second of media analysed "
            "(whether or not the run kept up), and the CPU-bound estimate is the cores ÷ its median."
            "\n\n"
            + table(
                [
                    "streams",
                    "sustained",
                    "final lag s",
                    "lag slope s/s",
                    "cores used",
                    "cores per real-time stream",
                    "others, cores",
                    "streams per free core",
                    "RSS MB/stream",
                    "errors",
                ],
                rows,
            )
        )
    if r.rss:
        rows = [
            [
                label,
                run.streams,
                f(run.baseline_mb, 0),
                f(median(run.rss_mb[len(run.rss_mb) // 2 :]), 0),
                f(run.rss_per_stream_mb, 0),
            ]
            for label, run in r.rss.items()
        ]
        parts.append(
            "**Memory per stream**: RSS with N real-time streams (median over the second half of "
            "the run) less the process's RSS before any stream started (modules imported, "
            "detectors built), ÷ N.\n\n"
            + table(["clip", "streams", "baseline MB", "with streams MB", "per stream MB"], rows)
        )
    return "\n\n".join(parts)


def aws_section(r: Results) -> str:
    a = r.aws
    assert a is not None
    at = streams_per_worker(r)
    parts = [
        f"The real system on the emulator (moto's server): the router's handler in this process, "
        f"one real `avmon worker` process (capacity {a.worker_capacity}, so one slot free: it "
        f"keeps polling and surveying), {a.streams} healthy real-time streams, default settings "
        f"(15 s leases renewed every 5 s). Router and worker each reach the emulator through a "
        f"request-counting proxy (`bench/proxy.py`), so every request is counted at the wire. "
        f"Steady state: {a.seconds:g} s with no user traffic; the router's housekeeping (once a "
        f"minute on EventBridge in the cloud) was run {aws_calls.HOUSEKEEPING_RUNS} times by hand "
        f"and scaled to that schedule. Defects written during the run: {a.defects_written} "
        "(a healthy stream writes none)."
    ]
    rows = [[f"worker {op}", "per stream", f(n, 0)] for op, n in a.per_stream_rates().items()]
    rows += [[f"worker {op}", "per worker", f(n, 0)] for op, n in a.per_worker_rates().items()]
    rows += [[f"router {op}", "per system", f(n, 0)] for op, n in a.housekeeping_rates().items()]
    parts.append(
        "Requests per hour, by operation (per stream-hour, per worker-hour or per hour for the "
        "whole system):\n\n" + table(["operation", "scales with", "requests per hour"], rows)
    )
    counts = sorted({1, 2, 4, a.streams, at, 16})
    rows = [[str(n), f(sum(a.at(n).values()), 0)] for n in counts]
    parts.append(
        "Requests per healthy stream-hour as a function of streams per worker (per-stream "
        "requests + the worker's own ÷ streams + housekeeping ÷ streams, i.e. a one-worker system, "
        f"the most it can cost per stream). The summary quotes {at}: the capacity measured above, "
        "or its CPU-bound estimate when the machine was too busy for any run to keep up.\n\n"
        + table(["streams per worker", "requests per stream-hour"], rows)
    )
    starts = ", ".join(f"{op} {n:g}" for op, n in sorted(a.per_start.items()))
    user = [[label, ", ".join(f"{op} ×{n}" for op, n in c.items())] for label, c in a.per_request.items()]
    parts.append(
        f"Once per stream start (its `POST /streams` and the worker's claim, the worker's own "
        f"start shared out): {starts}.\n\nUser requests to the router, and the AWS requests each "
        "costs:\n\n" + table(["request", "AWS requests"], user)
    )
    return "\n\n".join(parts)


def per_frame_section(r: Results) -> str:
    p = r.per_frame
    assert p is not None
    calls = ", ".join(f"{op} {n / p.frames:g}" for op, n in sorted(p.calls.items()))
    rows = [
        ["in memory (avmon)", f(p.memory_cpu_ms_per_frame), f(p.memory_wall_s / p.frames * 1e3), "0"],
        [
            "through S3 + one orchestration call per frame",
            f(p.handoff_cpu_ms_per_frame),
            f(p.handoff_wall_s / p.frames * 1e3),
            f(p.calls_per_frame, 1),
        ],
    ]
    text = (
        f"The same decode and detectors on the first {p.frames} pictures of the {p.clip.label} clip, "
        "with frames handed between a decode stage and a detector stage through the emulator's S3 "
        "(PutObject, GetObject, DeleteObject of the luma plane plus the audio since the previous "
        "picture) and one Step Functions `StartExecution` per frame (a two-state machine: 2 billed "
        f"state transitions per frame). Requests per frame: {calls}. CPU: this process only (the "
        "storage and orchestration work is AWS's, billed per request).\n\n"
        + table(["design", "CPU ms per frame", "wall ms per frame", "AWS requests per frame"], rows)
        + f"\n\nHanding frames through S3 costs **{p.cpu_ratio:.1f}×** the CPU per frame of "
        "passing them in memory (median over paired rounds)."
    )
    if r.aws is not None:
        ours, theirs = stream_hour_costs(r)
        fps = p.clip.fps
        rows = [
            [
                "requests",
                usd(ours.requests_usd),
                usd(theirs.requests_usd),
                ", ".join(f"{k} {usd(v)}" for k, v in theirs.requests.items() if v > 0),
            ],
            ["compute (Fargate vCPU)", usd(ours.cpu_usd), usd(theirs.cpu_usd), ""],
            ["memory (Fargate GB)", usd(ours.memory_usd), usd(theirs.memory_usd), "same per stream"],
            ["**total**", f"**{usd(ours.total)}**", f"**{usd(theirs.total)}**", ""],
        ]
        text += (
            f"\n\n**Cost per stream-hour** ({p.clip.label}, {fps} fps: {fps * 3600:,} frames an "
            f"hour). avmon: the measured requests per healthy stream-hour at "
            f"{streams_per_worker(r)} streams per worker, the full pipeline's measured CPU per "
            "media second and RSS per stream. Per-frame design: its measured requests and CPU per "
            "frame × frames per hour, the same memory; nothing for Lambda or data transfer, so it "
            "is a lower bound.\n\n"
            + table(["part", "avmon", "per-frame design", "per-frame detail"], rows)
            + f"\n\navmon costs **{ours.total / theirs.total:.2%}** of the per-frame design "
            f"(**{1 - ours.total / theirs.total:.1%} less**; the claim was 90 %). Requests alone: "
            f"{sum(r.aws.at(streams_per_worker(r)).values()):,.0f} per stream-hour against "
            f"{p.calls_per_frame * fps * 3600:,.0f}."
        )
    rows = [
        [name, f"{price.usd * 1e6:g} µ$" if price.usd < 1e-3 else f"{price.usd:g}", price.per, price.source]
        for name, price in prices.PRICES.items()
    ]
    text += (
        f"\n\n**Prices** (USD, {prices.REGION}, on-demand list prices as published by AWS as of "
        f"{prices.PRICES_AS_OF}; no free tier; not fetched by the benchmark, which has no web "
        "access: edit `bench/prices.py` to rerun with current ones). Values under $0.001 are "
        "shown in micro-dollars (per request or unit × 10⁶).\n\n"
        + table(["price", "USD", "per", "source"], rows)
    )
    return text
