"""Detector discovery: every module in this package that defines a :class:`Detector` subclass
with a ``name`` is registered. A new detector is one new file plus its tests."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import Any

from worker.detectors.base import (
    AudioBlock,
    Detector,
    Finding,
    PacketInfo,
    Severity,
    StreamContext,
    VideoFrame,
)

__all__ = [
    "AudioBlock",
    "Detector",
    "Finding",
    "PacketInfo",
    "Severity",
    "StreamContext",
    "VideoFrame",
    "build_detectors",
    "profile_options",
    "registry",
    "wants",
]


@cache
def registry() -> dict[str, type[Detector]]:
    """Map of defect type to detector class, found by scanning this package."""
    found: dict[str, type[Detector]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Detector)
                and obj is not Detector
                and obj.__module__ == module.__name__
                and obj.name
            ):
                if obj.name in found:
                    raise RuntimeError(f"two detectors named {obj.name!r}")
                found[obj.name] = obj
    return dict(sorted(found.items()))


def wants(detector: Detector, feed: str) -> bool:
    """Whether ``detector`` overrides ``feed`` ("feed_video", "feed_audio" or "feed_packet"):
    the session calls each feed only on the detectors that look at it, as every call costs."""
    return getattr(type(detector), feed) is not getattr(Detector, feed)


def build_detectors(
    ctx: StreamContext, enabled: set[str] | None = None, options: Mapping[str, Any] | None = None
) -> list[Detector]:
    """One fresh instance of every registered detector (or of ``enabled`` only) for a stream,
    with ``options[name]`` (its options dataclass) where given, its defaults elsewhere."""
    chosen = options or {}
    return [
        cls(chosen.get(name), ctx=ctx)
        for name, cls in registry().items()
        if enabled is None or name in enabled
    ]


def profile_options(profile: str) -> dict[str, Any]:
    """The detector options of loudness profile ``profile`` (``ebu_r128``, ``atsc_a85``): the
    loudness target and the true-peak ceiling. ValueError for an unknown profile."""
    from worker.detectors.clipping import ClippingOptions
    from worker.detectors.loudness import LoudnessOptions

    return {
        "loudness": LoudnessOptions.for_profile(profile),
        "clipping": ClippingOptions.for_profile(profile),
    }
