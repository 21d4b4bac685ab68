"""Detector options declared once: type, default, range, unit and meaning in one place.

Each detector's options are a frozen dataclass deriving from :class:`DetectorOptions` whose
fields are declared with :func:`opt`, as FFmpeg declares a filter's ``AVOption`` table (name,
help, default, min, max)::

    @dataclass(frozen=True, slots=True)
    class BlackOptions(DetectorOptions):
        d: float = opt(2.0, "s", "minimum duration of a run of black pictures", ge=0.0)

From that declaration alone come the range checks (a clear ``ValueError`` naming the option, on
construction), the conversion of settings and per-stream values (:meth:`DetectorOptions.
from_mapping`: JSON numbers, lists) and the option table of the class's docstring and of
``python -m worker.detectors.doc``. A bound may name another option (``le="window_s"``): the
relation is checked and documented the same way.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

OPTION = "avmon_option"  # the dataclass field metadata key holding an Option

Bound = float | str | None  # a number, the name of another option, or no bound


@dataclass(frozen=True, slots=True)
class Option:
    """How one option is documented and checked (bounds inclusive: ``ge``/``le``, exclusive:
    ``gt``/``lt``; ``choices``: the only values allowed)."""

    unit: str
    doc: str
    ge: Bound = None
    gt: Bound = None
    le: Bound = None
    lt: Bound = None
    choices: tuple[Any, ...] | None = None

    def range_text(self) -> str:
        """The allowed values as the tables write them: ``[0, 1]``, ``(0, inf)``, ``1, 2, 4``."""
        if self.choices is not None:
            return ", ".join(_text(c) for c in self.choices)
        if self.ge is None and self.gt is None and self.le is None and self.lt is None:
            return "-"
        if self.ge is not None:
            lo = "[" + _text(self.ge)
        else:
            lo = "(" + (_text(self.gt) if self.gt is not None else "-inf")
        if self.le is not None:
            hi = _text(self.le) + "]"
        else:
            hi = (_text(self.lt) if self.lt is not None else "inf") + ")"
        return f"{lo}, {hi}"

    def problem(self, value: Any, values: Any) -> str | None:
        """Why ``value`` is not allowed (``values``: the options it may be bounded by), or None."""
        if self.choices is not None:
            return None if value in self.choices else f"must be one of {self.range_text()}"
        if isinstance(value, tuple | bool):
            return None
        checks = (
            (self.ge, operator.ge),
            (self.gt, operator.gt),
            (self.le, operator.le),
            (self.lt, operator.lt),
        )
        for bound, ok in checks:
            if bound is not None and not ok(value, _resolve(bound, values)):
                unit = f" {self.unit}" if self.unit not in ("", "-") else ""
                return f"must be in {self.range_text()}{unit}{_where(self, values)}"
        return None


def _text(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:g}"
    return str(value)


def _resolve(bound: float | str, values: Any) -> float:
    return float(getattr(values, bound)) if isinstance(bound, str) else float(bound)


def _where(option: Option, values: Any) -> str:
    """``(window_s = 0.4)``: the values of the options a range names, for the message."""
    named = [b for b in (option.ge, option.gt, option.le, option.lt) if isinstance(b, str)]
    return "".join(f" ({name} = {_text(getattr(values, name))})" for name in named)


def opt(
    default: Any,
    unit: str,
    doc: str,
    *,
    ge: Bound = None,
    gt: Bound = None,
    le: Bound = None,
    lt: Bound = None,
    choices: tuple[Any, ...] | None = None,
) -> Any:
    """A dataclass field declaring one detector option: its ``default``, ``unit`` (``s``, ``dB``,
    ``fraction``...), one-line ``doc`` and allowed range (see :class:`Option`)."""
    option = Option(unit, doc, ge=ge, gt=gt, le=le, lt=lt, choices=choices)
    return dataclasses.field(default=default, metadata={OPTION: option})


class DetectorOptions:
    """Base of every detector's options dataclass: checks each value against its declaration
    on construction, and renders the declarations as the class docstring's table."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A slotted dataclass is built twice; the second time its fields are known.
        if "__dataclass_fields__" in cls.__dict__ and cls.declared():
            cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n" + _indent(cls.table("rst"))

    def __post_init__(self) -> None:
        for name, (f, _) in self.declared().items():
            value = _coerce(name, getattr(self, name), f.default)
            object.__setattr__(self, name, value)
        for name, (_, option) in self.declared().items():
            value = getattr(self, name)
            problem = option.problem(value, self)
            if problem is not None:
                raise ValueError(f"{name} {problem}, got {_text(value)}")

    @classmethod
    def declared(cls) -> dict[str, tuple[dataclasses.Field[Any], Option]]:
        """Every option: its dataclass field and its declaration, in declaration order."""
        return {
            f.name: (f, f.metadata[OPTION])
            for f in dataclasses.fields(cls)
            if OPTION in f.metadata
        }

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Self | None = None) -> Self:
        """Options from a mapping of names to values (settings JSON, a stream's overrides),
        over ``base`` (the defaults when None). ValueError names an unknown option or a value
        out of its range."""
        known = cls.declared()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r}; known: {', '.join(known)}")
        start = base if base is not None else cls()
        return dataclasses.replace(start, **values)

    @classmethod
    def table(cls, style: str = "markdown") -> str:
        """The option table: ``markdown`` (for ``python -m worker.detectors.doc``) or ``rst``
        (the docstring's)."""
        rows = [
            (name, option.unit or "-", _text(f.default), option.range_text(), option.doc)
            for name, (f, option) in cls.declared().items()
        ]
        header = ("name", "unit", "default", "range", "meaning")
        if style == "markdown":
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            return "\n".join(lines + [_markdown_row(r) for r in rows])
        widths = [max(len(str(r[i])) for r in (*rows, header)) for i in range(len(header) - 1)]
        rule = "  ".join("=" * w for w in widths) + "  " + "=" * 40
        lines = [
            "  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
            for r in (header, *rows)
        ]
        return "\n".join([rule, lines[0], rule, *lines[1:], rule])


def _markdown_row(row: tuple[str, ...]) -> str:
    name, *rest = row
    return "| " + " | ".join((f"`{name}`", *(c.replace("|", "\\|") for c in rest))) + " |"


def _indent(text: str) -> str:
    return "\n".join("    " + line if line else line for line in text.splitlines())


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` as the option's type (that of its default): JSON gives ints for floats and
    lists for tuples. ValueError names the option when it cannot be."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, tuple):
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
    else:
        return value
    kinds = {bool: "true or false", int: "a whole number", float: "a number", tuple: "a list of names"}
    raise ValueError(f"{name} must be {kinds[type(default)]}, got {value!r}")
