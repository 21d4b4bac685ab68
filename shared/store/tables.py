"""The names of the tables every request builder addresses."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import DEFAULT_PREFIX, CommonSettings


@dataclass(frozen=True)
class Tables:
    streams: str
    defects: str
    workers: str = f"{DEFAULT_PREFIX}-workers"
    deliveries: str = f"{DEFAULT_PREFIX}-deliveries"

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Tables:
        return cls(
            streams=settings.streams_table,
            defects=settings.defects_table,
            workers=settings.workers_table,
            deliveries=settings.deliveries_table,
        )
