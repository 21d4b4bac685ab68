"""The assignment queue: commands to go and claim a stream. A message is never the lease."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.models import Assignment
from worker.leases import call

log = logging.getLogger("avmon.worker.assignments")


@dataclass
class Received:
    receipt: str
    assignment: Assignment | None  # None: poison (not JSON, wrong schema)
    body: str


class AssignmentQueue:
    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs, self.url = sqs, queue_url

    async def receive(self, max_messages: int, wait_s: int) -> list[Received]:
        """Up to ``max_messages`` (1..10): the worker asks only for as many as it has free slots."""
        reply = await call(
            self.sqs.receive_message,
            QueueUrl=self.url,
            MaxNumberOfMessages=max(1, min(10, max_messages)),
            WaitTimeSeconds=wait_s,
        )
        received = []
        for message in reply.get("Messages", []):
            body = str(message.get("Body", ""))
            try:
                assignment: Assignment | None = Assignment.model_validate_json(body)
            except ValidationError:
                assignment = None
            received.append(Received(receipt=message["ReceiptHandle"], assignment=assignment, body=body))
        return received

    async def delete(self, receipt: str) -> None:
        await call(self.sqs.delete_message, QueueUrl=self.url, ReceiptHandle=receipt)

    async def reject(self, received: Received) -> None:
        """A poison message: make it visible again at once, so its receive count reaches the
        queue's ``maxReceiveCount`` quickly and SQS moves it to the dead-letter queue."""
        log.warning("poison assignment message (left for the dead-letter queue): %r", received.body[:200])
        await call(
            self.sqs.change_message_visibility,
            QueueUrl=self.url,
            ReceiptHandle=received.receipt,
            VisibilityTimeout=0,
        )

    async def leave(self, receipt: str, delay_s: int = 0) -> None:
        """Not for this worker: visible again for the others after ``delay_s`` (at once by default)."""
        await call(
            self.sqs.change_message_visibility,
            QueueUrl=self.url,
            ReceiptHandle=receipt,
            VisibilityTimeout=delay_s,
        )

    async def send(self, stream_id: str, generation: int) -> None:
        body = Assignment(stream_id=stream_id, generation=generation).model_dump_json()
        await call(self.sqs.send_message, QueueUrl=self.url, MessageBody=body)
