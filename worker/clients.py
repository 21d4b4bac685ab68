"""The worker's AWS clients, built from settings for `avmon worker` (the ECS task's entry point).

The worker itself never builds a client: it is handed these (tests hand it clients of the
emulator), so its loop can run in process. aioboto3 clients over botocore's ``AWS_ENDPOINT_URL``
(shared/aws.py): real AWS, LocalStack or moto's server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from shared import aws
from worker.leases import call


@dataclass(frozen=True)
class Clients:
    """Open aioboto3 clients: DynamoDB (streams, leases, defects), SQS (assignments), SNS (defect
    messages)."""

    ddb: Any
    sqs: Any
    sns: Any


@contextlib.asynccontextmanager
async def aws_clients() -> AsyncIterator[Clients]:
    """The worker's clients, open for the block and closed after it."""
    session = aws.async_session()
    async with (
        session.client("dynamodb", config=aws.CLIENT_CONFIG) as ddb,
        session.client("sqs", config=aws.CLIENT_CONFIG) as sqs,
        session.client("sns", config=aws.CLIENT_CONFIG) as sns,
    ):
        yield Clients(ddb=ddb, sqs=sqs, sns=sns)


async def queue_url(sqs: Any, name: str) -> str:
    """The URL of the queue named ``name`` (the assignment queue of the settings)."""
    return str((await call(sqs.get_queue_url, QueueName=name))["QueueUrl"])
