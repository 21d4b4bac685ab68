"""What a :class:`~worker.transport.analyzer.TransportAnalyzer` is told (its options, each with
its default and range) and what it tells (its counters since the start, for Prometheus)."""

from __future__ import annotations

from dataclasses import dataclass

from worker.transport.cues import CUE_IN_TOLERANCE_S, CUES_LOST_S, PREROLL_MIN_S
from worker.transport.indicators import PID_TIMEOUT_DEFAULT_S
from worker.transport.mdi import MDI_INTERVAL_S


@dataclass(frozen=True)
class TransportOptions:
    """Settings, each with its default and range."""

    pid_timeout_s: float = PID_TIMEOUT_DEFAULT_S  # PID_error's user-set period, 0.1-3600 s
    clear_hold_s: float = 1.0  # an indicator clear this long closes its finding, 0-60 s
    batch_bytes: int = 256 * 1024  # bytes analysed together (one numpy batch), 4 KiB-16 MiB
    batch_s: float = 0.2  # live: analyse at least this often (seconds of arrival time), 0.01-1
    mdi_interval_s: float = MDI_INTERVAL_S  # RFC 4445 measurement interval, 0.1-60 s
    # SCTE-35 (worker/transport/cues.py): a cue-out or cue-in this little ahead of its splice
    # time is splice_preroll_short (SCTE 67: 4 s), 0-60 s
    cue_preroll_min_s: float = PREROLL_MIN_S
    cue_in_tolerance_s: float = CUE_IN_TOLERANCE_S  # slack after a break's end, 0-600 s
    cues_lost_s: float = CUES_LOST_S  # a cue PID silent this long is cues_lost, 1-86400 s

    def __post_init__(self) -> None:
        ranges = {
            "pid_timeout_s": (0.1, 3600.0), "clear_hold_s": (0.0, 60.0),
            "batch_bytes": (4096, 16 << 20), "batch_s": (0.01, 1.0), "mdi_interval_s": (0.1, 60.0),
            "cue_preroll_min_s": (0.0, 60.0), "cue_in_tolerance_s": (0.0, 600.0),
            "cues_lost_s": (1.0, 86400.0),
        }
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"TransportOptions.{name} = {value}: must be within {lo}-{hi}")


@dataclass
class TransportCounters:
    """Totals since the start, for Prometheus (all ints except the MDI figures)."""

    packets: int
    bytes_discarded: int  # bytes thrown away while out of sync
    indicators: dict[str, int]  # defect type -> errors counted (TSDuck's counting)
    per_pid: dict[int, dict[str, int]]  # PID -> {"packets": n, defect type: errors}
    mdi_delay_factor_ms: float | None = None  # last interval's (live input only)
    mdi_media_loss_rate: float | None = None  # last interval's, TS packets/s
    mdi_max_delay_factor_ms: float | None = None
    # TR 101 290 2.4 as information only: the largest PCR deviation from a constant-rate line
    # through the PCRs of each batch, ns. Meaningful on CBR streams (the standard's ±500 ns);
    # on VBR it measures the rate's variation, not the clock.
    pcr_accuracy_ns: float | None = None  # the last batch's
    pcr_accuracy_max_ns: float | None = None
