"""A profile of the full pipeline (pyinstrument, statistical, the session's thread).

``analyze`` runs on the 720p clip under pyinstrument, after a warm-up run (imports, codec setup).
Two views of the samples: where the session's loop spends its time (inclusive, by direct callee
of ``StreamSession.run`` and ``MediaReader._decode``: decoding, each detector, the views, the
loops' own Python), and
the functions with the most self time anywhere. The full text profile is saved next to the
clips (``bench/out/profile-720p.txt``).

``Packet.decode`` is wall time in the session's thread: with frame threading it includes waiting
for the decoder's other thread, so its share is of elapsed time, not of CPU.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pyinstrument import Profiler
from pyinstrument.frame import Frame

from bench.clips import Clip
from bench.throughput import run_pipeline

FRACTION_FILES = ("fractions.py", "numbers.py")  # time stamps as Fractions: pts * time_base


@dataclass
class ProfileResult:
    clip: Clip
    duration_s: float  # profiled wall time
    samples: int
    loop: list[tuple[str, float]]  # (callee of the session's or the reader's loop, seconds), largest first
    top_self: list[tuple[str, float]]  # (function, self seconds), largest first
    text_path: Path


def _name(frame: Frame) -> str:
    function = frame.function or "?"
    if frame.class_name:
        function = f"{frame.class_name}.{function}"
    if frame.is_synthetic:
        return function
    path = frame.file_path_short or frame.file_path or ""
    return f"{function} ({Path(path).name}:{frame.line_no})" if path else function


def _walk(frame: Frame) -> list[Frame]:
    found, stack = [], [frame]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.children)
    return found


def _self_times(root: Frame) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for node in _walk(root):
        self_time = node.time - sum(child.time for child in node.children)
        if node.is_synthetic and node.parent is not None:  # "[self]" and friends: the parent's
            totals[_name(node.parent)] += node.time
        elif self_time > 0:
            totals[_name(node)] += self_time
    return totals


def _label(frame: Frame) -> str:
    if frame.is_synthetic:
        owner = frame.parent.function if frame.parent is not None else ""
        return "reader loop (own Python)" if owner == "_decode" else "session loop (own Python)"
    if Path(frame.file_path or "").name in FRACTION_FILES:
        return "Fraction arithmetic (pts × time_base)"
    return _name(frame)


def _loop_breakdown(root: Frame) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for node in _walk(root):
        # The session's loop dispatches what the reader yields: its own callees, and the
        # reader's (decoding, the views) under MediaReader._decode.
        session_loop = node.function == "run" and node.class_name == "StreamSession"
        reader_loop = node.function == "_decode" and node.class_name == "MediaReader"
        if session_loop or reader_loop:
            for child in node.children:
                if child.function != "events":  # the reader, counted by its own loop's parts
                    totals[_label(child)] += child.time
    return totals


def profile_pipeline(clip: Clip, runs: int, out_dir: Path, top: int = 12) -> ProfileResult:
    run_pipeline(clip.url)  # warm-up: imports, detector discovery
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    for _ in range(runs):
        run_pipeline(clip.url)
    session = profiler.stop()
    root = session.root_frame()
    out_dir.mkdir(parents=True, exist_ok=True)
    text_path = out_dir / f"profile-{clip.label}.txt"
    text_path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    if root is None:
        return ProfileResult(clip, session.duration, session.sample_count, [], [], text_path)
    loop = sorted(_loop_breakdown(root).items(), key=lambda kv: -kv[1])
    top_self = sorted(_self_times(root).items(), key=lambda kv: -kv[1])[:top]
    return ProfileResult(clip, session.duration, session.sample_count, loop, top_self, text_path)
