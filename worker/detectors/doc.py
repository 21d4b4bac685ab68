"""``python -m worker.detectors.doc [NAME...]``: every registered detector's option table, as
markdown, generated from the options' declarations (the one source of the tables: the option
dataclasses' docstrings are generated from the same declarations)."""

from __future__ import annotations

import sys

from worker.detectors import registry


def markdown(names: list[str] | None = None) -> str:
    """The option tables of ``names`` (every registered detector when None), in name order.
    KeyError for a name that is not registered."""
    detectors = registry()
    chosen = sorted(names) if names else list(detectors)
    parts = []
    for name in chosen:
        cls = detectors[name]
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        parts.append(f"### `{name}`\n\n{summary}\n\n{cls.Options.table('markdown')}\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    unknown = sorted(set(names) - set(registry()))
    if unknown:
        print(f"unknown detector {unknown[0]!r}; known: {', '.join(registry())}", file=sys.stderr)
        return 2
    print(markdown(names), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
