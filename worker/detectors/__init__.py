"""Detector discovery: every module in this package that defines a :class:`Detector` subclass
with a ``name`` is registered. A new detector is one new file plus its tests (README: "Adding a
detector").

Registration checks the contract: the name is a :class:`~shared.models.DefectType` (a finding
of any other type could not be recorded) and ``Options`` derives from
:class:`~worker.detectors.options.DetectorOptions` (declared, checked, documented options).
Options are resolved per stream, later layers winning: the declared defaults, the stream's
loudness profile, the deployment's ``AVMON_DETECTOR_OPTIONS``, the stream's own overrides.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import Any

from shared.models import DefectType
from worker.detectors.base import (
    AudioBlock,
    BlackPicture,
    Detector,
    Finding,
    PacketInfo,
    Severity,
    StreamContext,
    VideoFrame,
)
from worker.detectors.options import DetectorOptions, Option, opt
from worker.detectors.runs import RunTracker

__all__ = [
    "AudioBlock",
    "BlackPicture",
    "Detector",
    "DetectorOptions",
    "Finding",
    "Option",
    "PacketInfo",
    "RegistrationError",
    "RunTracker",
    "Severity",
    "StreamContext",
    "VideoFrame",
    "build_detectors",
    "check_detector",
    "check_detector_options",
    "layered",
    "opt",
    "parse_options",
    "profile_options",
    "registry",
    "resolve_options",
    "wants",
]

# Modules of the package that hold the contract, not detectors.
_NOT_DETECTORS = frozenset({"base", "options", "runs", "doc"})

OptionValues = Mapping[str, Mapping[str, Any]]  # detector name → option name → value (JSON)


class RegistrationError(TypeError):
    """A detector class that breaks the contract (its name, its options)."""


def check_detector(cls: type[Detector]) -> None:
    """Refuse ``cls`` unless its ``name`` is a DefectType and its ``Options`` are declared
    :class:`DetectorOptions`."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if cls.name not in DefectType.__members__.values():
        raise RegistrationError(
            f"detector {where} is named {cls.name!r}, which is not a defect type: add it to "
            "shared.models.DefectType (DESIGN.md §4) or use one of its values"
        )
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, DetectorOptions)):
        raise RegistrationError(f"detector {where}: Options must be a DetectorOptions dataclass")


@cache
def registry() -> dict[str, type[Detector]]:
    """Map of defect type to detector class, found by scanning this package."""
    found: dict[str, type[Detector]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_DETECTORS:
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
                check_detector(obj)
                if obj.name in found:
                    raise RegistrationError(f"two detectors named {obj.name!r}")
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


def parse_options(values: OptionValues, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Options dataclasses from ``{"freeze": {"d": 3}}`` (over ``base``'s where given).
    ValueError names the unknown detector, the unknown option or the value out of range."""
    known = registry()
    out = dict(base or {})
    for name, changes in values.items():
        cls = known.get(name)
        if cls is None:
            raise ValueError(f"unknown detector {name!r}; known: {', '.join(known)}")
        if not isinstance(changes, Mapping):
            raise ValueError(f"{name}: options must be an object of option names to values, got {changes!r}")
        try:
            out[name] = cls.Options.from_mapping(changes, out.get(name))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


def profile_options(profile: str) -> dict[str, Any]:
    """The detector options of loudness profile ``profile`` (``ebu_r128``, ``atsc_a85``): the
    loudness target and the true-peak ceiling. ValueError for an unknown profile."""
    from worker.detectors.clipping import ClippingOptions
    from worker.detectors.loudness import LoudnessOptions

    return {
        "loudness": LoudnessOptions.for_profile(profile),
        "clipping": ClippingOptions.for_profile(profile),
    }


def layered(*layers: OptionValues) -> dict[str, dict[str, Any]]:
    """One mapping of option values from ``layers`` (the deployment's, a stream's), later
    layers winning option by option."""
    out: dict[str, dict[str, Any]] = {}
    for values in layers:
        for name, changes in values.items():
            out[name] = {**out.get(name, {}), **changes}
    return out


def check_detector_options(values: OptionValues) -> None:
    """Refuse a deployment's ``AVMON_DETECTOR_OPTIONS`` (ValueError naming the setting and what
    is wrong in it) before any stream runs with it."""
    try:
        parse_options(values)
    except ValueError as exc:
        raise ValueError(f"AVMON_DETECTOR_OPTIONS: {exc}") from None


def resolve_options(
    loudness_profile: str = "ebu_r128", *layers: OptionValues
) -> dict[str, Any]:
    """A stream's options dataclasses: its loudness profile's, then each layer of values in
    turn (the deployment's settings, the stream's overrides). ValueError as :func:`parse_options`."""
    options = profile_options(loudness_profile)
    for values in layers:
        options = parse_options(values, options)
    return options
