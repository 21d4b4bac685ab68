"""AWS list prices, and both designs' cost per stream-hour from measured figures.

The prices are AWS's published on-demand list prices for US East (N. Virginia), as of the date in
:data:`PRICES_AS_OF`, with no free tier, savings plan or volume tier. This machine has no web
access: they were not fetched by the benchmark. To rerun with current prices, edit :data:`PRICES`
(one table) and run ``python -m bench`` again.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2025-01 (after DynamoDB's November 2024 on-demand price cut)"
REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    usd: float
    per: str
    source: str


PRICES: dict[str, Price] = {
    "dynamodb_write": Price(0.625 / 1e6, "write request unit (on-demand)", "aws.amazon.com/dynamodb/pricing"),
    "dynamodb_read": Price(0.125 / 1e6, "read request unit (on-demand)", "aws.amazon.com/dynamodb/pricing"),
    "sqs_request": Price(0.40 / 1e6, "request (standard queue, 64 KB)", "aws.amazon.com/sqs/pricing"),
    "s3_put": Price(0.005 / 1e3, "PUT/COPY/POST/LIST request (Standard)", "aws.amazon.com/s3/pricing"),
    "s3_get": Price(0.0004 / 1e3, "GET/SELECT request (Standard)", "aws.amazon.com/s3/pricing"),
    "s3_delete": Price(0.0, "DELETE request (free)", "aws.amazon.com/s3/pricing"),
    "sfn_transition": Price(
        0.025 / 1e3, "state transition (Standard workflows)", "aws.amazon.com/step-functions/pricing"
    ),
    "fargate_vcpu_hour": Price(0.04048, "vCPU-hour (Linux/x86)", "aws.amazon.com/fargate/pricing"),
    "fargate_gb_hour": Price(0.004445, "GB-hour of memory (Linux/x86)", "aws.amazon.com/fargate/pricing"),
    "lambda_request": Price(0.20 / 1e6, "request", "aws.amazon.com/lambda/pricing"),
    "lambda_gb_second": Price(0.0000166667, "GB-second (x86)", "aws.amazon.com/lambda/pricing"),
}  # fmt: skip

# What each counted request is billed as: (price, units per request). Items of the streams table
# are well under 1 KB (one write unit per write, half a read unit per eventually consistent read
# under 4 KB); a transactional write costs 2 units per item, and a healthy stream writes none.
BILLING: dict[str, tuple[str, float]] = {
    "dynamodb:UpdateItem": ("dynamodb_write", 1.0),
    "dynamodb:PutItem": ("dynamodb_write", 1.0),
    "dynamodb:PutItem live-picture": ("dynamodb_write", 5.0),  # a 3-5 KB item: a unit per KB
    "dynamodb:DeleteItem": ("dynamodb_write", 1.0),
    "dynamodb:TransactWriteItems": ("dynamodb_write", 4.0),  # one defect + its lease check, ×2
    "dynamodb:GetItem": ("dynamodb_read", 0.5),
    "dynamodb:Query": ("dynamodb_read", 0.5),
    "dynamodb:Scan": ("dynamodb_read", 0.5),
    "s3:PutObject": ("s3_put", 1.0),
    "s3:GetObject": ("s3_get", 1.0),
    "s3:DeleteObject": ("s3_delete", 1.0),
    "states:StartExecution": ("sfn_transition", 2.0),  # the per-frame machine's two states
}
DEFAULT_BILLING = ("sqs_request", 1.0)  # SQS requests, and anything unlisted, at SQS's price


def request_cost(op: str, count: float) -> float:
    """USD for ``count`` requests of ``op`` (``service:Operation``)."""
    name, units = BILLING.get(op, DEFAULT_BILLING)
    return PRICES[name].usd * units * count


@dataclass(frozen=True)
class StreamHourCost:
    """USD per stream-hour, by part."""

    requests: dict[str, float]  # operation → USD
    cpu_usd: float
    memory_usd: float

    @property
    def requests_usd(self) -> float:
        return sum(self.requests.values())

    @property
    def total(self) -> float:
        return self.requests_usd + self.cpu_usd + self.memory_usd


def stream_hour_cost(
    requests_per_hour: dict[str, float], cpu_s_per_media_s: float, memory_gb: float
) -> StreamHourCost:
    """Cost of one stream-hour: its requests, its CPU (``cpu_s_per_media_s`` vCPU-seconds per
    second of media, on Fargate) and its memory (``memory_gb`` held for the hour, on Fargate)."""
    return StreamHourCost(
        requests={op: request_cost(op, n) for op, n in requests_per_hour.items()},
        cpu_usd=cpu_s_per_media_s * PRICES["fargate_vcpu_hour"].usd,
        memory_usd=memory_gb * PRICES["fargate_gb_hour"].usd,
    )
