"""Settings, one class per process, read from the environment with the prefix ``AVMON_``.

AWS endpoint and credentials are botocore's own (``AWS_ENDPOINT_URL``, ``AWS_REGION`` ...): both
boto3 and aioboto3 read them, so a process joins LocalStack, moto's server or real AWS by
environment alone.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PREFIX = "avmon"
DEPLOYED_SCHEMES = "http,https,udp,srt,rtmp,rtsp"
LOCAL_SCHEMES = DEPLOYED_SCHEMES + ",file"


class CommonSettings(BaseSettings):
    """Names of the shared resources (defaults match ``infra/template.yaml`` with Prefix=avmon)."""

    model_config = SettingsConfigDict(env_prefix="AVMON_", extra="ignore", frozen=True)

    streams_table: str = Field(f"{DEFAULT_PREFIX}-streams", description="DynamoDB streams table.")
    defects_table: str = Field(f"{DEFAULT_PREFIX}-defects", description="DynamoDB defects table.")
    workers_table: str = Field(f"{DEFAULT_PREFIX}-workers", description="DynamoDB worker registry.")
    deliveries_table: str = Field(
        f"{DEFAULT_PREFIX}-deliveries", description="DynamoDB log of notification deliveries."
    )
    assignment_queue: str = Field(f"{DEFAULT_PREFIX}-assignments", description="SQS queue name.")
    dead_letter_queue: str = Field(f"{DEFAULT_PREFIX}-assignments-dlq", description="Its DLQ name.")
    lease_period_s: float = Field(
        15.0, gt=1.0, le=300.0, description="Lease duration; the owner renews every third of it."
    )
    defect_ttl_days: int = Field(30, ge=1, description="Defects expire (DynamoDB TTL) after this.")
    allowed_schemes: str = Field(
        DEPLOYED_SCHEMES,
        description="Comma list of URL schemes a stream may use (`file` only where enabled: local use).",
    )
    allow_private_hosts: bool = Field(
        False, description="Accept hosts on loopback/private/link-local addresses (local use)."
    )

    @property
    def schemes(self) -> frozenset[str]:
        return frozenset(s.strip().lower() for s in self.allowed_schemes.split(",") if s.strip())


class RouterSettings(CommonSettings):
    """The router (Lambda or local HTTP adapter)."""

    max_page_size: int = Field(100, ge=1, le=1000, description="Upper bound of a page's `limit`.")
    reenqueue_after_s: float = Field(
        20.0, gt=0, description="Housekeeping re-sends an orphaned stream's assignment after this."
    )


class WorkerSettings(CommonSettings):
    """One worker process."""

    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Names the worker in leases and defects (default: host name and pid).",
    )
    worker_capacity: int = Field(
        default_factory=lambda: max(1, 16 * (os.cpu_count() or 1)),
        ge=1,
        le=1024,
        description=(
            "Upper bound of the streams this worker monitors at once (default: 16 per CPU core). "
            "How many it takes is decided by their measured cost against `cpu_target`."
        ),
    )
    cpu_target: float = Field(
        0.75,
        gt=0.05,
        le=1.0,
        description="Take another stream only while the streams' measured CPU plus its expected cost "
        "stays under this share of the cores the worker may use.",
    )
    decode_threads: int = Field(
        1, ge=1, le=16, description="Video decoder threads per stream (1: cheapest, streams outnumber cores)."
    )
    media_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes that decode and analyse the streams (0: one per core the worker may "
        "use; 1: the worker's own process). One process has one GIL: past a dozen streams its "
        "threads wait for it more than they work (worker/shards.py).",
    )
    poll_wait_s: int = Field(20, ge=0, le=20, description="SQS long-poll wait.")
    takeover_scan_s: float = Field(
        10.0, gt=0, description="With free capacity, look for streams whose lease expired this often."
    )
    flush_interval_s: float = Field(0.5, gt=0, description="Defect writer batching interval.")
    open_timeout_s: float = Field(10.0, gt=0, description="Opening a source.")
    read_timeout_s: float = Field(
        5.0, gt=0, description="No data for this long is a stall (HLS: at least three target durations)."
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="Cap of the reconnect backoff.")
    signal_loss_after_s: float = Field(
        2.0, gt=0, description="A source silent (no packets) for this long is reported as signal_loss."
    )
    health_file: str = Field(
        "/tmp/avmon-worker-health", description="Touched by the loop; `avmon health` reads its age."
    )
    health_max_age_s: float = Field(30.0, gt=0, description="A heartbeat older than this is unhealthy.")
    shed_lag_s: float = Field(
        10.0,
        gt=0,
        description="A stream this far behind its live edge, and falling further, makes the worker hand "
        "one stream back (the most recently taken).",
    )
    shed_recover_s: float = Field(
        20.0, gt=0, description="After handing a stream back, time the others get to catch up first."
    )
    shed_cooldown_s: float = Field(
        300.0, gt=0, description="A stream this worker handed back is left to other workers this long."
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Serve Prometheus /metrics and /healthz on this port (0: off)."
    )
    webhook_urls: str = Field("", description="Comma list of webhook URLs told of every defect.")
    webhook_secret: str = Field(
        "", description="HMAC-SHA256 key of the X-Avmon-Signature header (never logged)."
    )
    defect_topic_arn: str = Field("", description="SNS topic told of every defect (empty: none).")
    notify_min_gap_s: float = Field(
        10.0, ge=0, description="A same-type defect re-opening within this many seconds is folded."
    )
    captions_lost_s: float = Field(
        10.0, ge=0.1, le=3600.0, description="Captions that carried text and stop this long: captions_lost."
    )
    cues_lost_s: float = Field(
        600.0, ge=1.0, le=86400.0, description="An SCTE-35 PID that had cues, silent this long: cues_lost."
    )
    hls_health: bool = Field(
        True, description="Judge the playlists of every rendition of an HLS source (manifest_stale...)."
    )
    hls_stale_targets: float = Field(
        3.0, gt=1.0, le=100.0, description="A live HLS playlist with no new segment for this many target "
        "durations is manifest_stale.",
    )
    hls_pdt_tolerance_s: float = Field(
        1.0, gt=0, description="Renditions' program date-times of one segment may differ this much (s)."
    )
    hls_check_segments: bool = Field(
        True, description="Check every new HLS segment of every rendition with a ranged GET (segment_error)."
    )
    stop_grace_s: float = Field(
        20.0, gt=0, description="SIGTERM: time to flush and hand streams back (< ECS stopTimeout 30 s)."
    )
    detector_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Detector options for every stream of this deployment, as JSON: "
        '`{"freeze": {"d": 3}, "silence": {"noise_db": -50}}` (names and ranges: '
        "`python -m worker.detectors.doc`). Checked when the worker starts: an unknown detector "
        "or option, or a value out of its range, stops it with a message naming it. They win "
        "over a stream's loudness profile for the options they name.",
    )
