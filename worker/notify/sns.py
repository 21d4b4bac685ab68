"""Publishing one message to an SNS topic.

``Publish`` to the topic with the body as ``Message`` and the ``MessageAttributes`` ``event``,
``stream_id``, ``incident_id`` and ``title`` (String), for subscription filter policies. Standard
topics only (a FIFO topic would need a ``MessageGroupId``). An SQS subscriber with
``RawMessageDelivery`` gets the body as the SQS message body; without it, the body is the
``Message`` string inside SNS's JSON envelope.
"""

from __future__ import annotations

from typing import Any

from shared import aws
from worker.notify.delivery import Delivery, Result


def subject(stream_id: str, title: str, event: str) -> str:
    """What email subscribers see: ASCII, no line breaks, under 100 characters."""
    text = f"avmon {stream_id}: {title} {event.split('.')[-1]}"
    return text.encode("ascii", "replace").decode()[:99]


async def publish(sns: Any | None, delivery: Delivery) -> Result:
    """One attempt to publish ``delivery`` (target: the topic ARN) with the aioboto3 client ``sns``;
    every botocore failure becomes a :class:`Result` (retryable as ``shared.aws`` maps it)."""
    message = delivery.message
    attributes = {
        "event": message.event,
        "stream_id": message.stream_id,
        "incident_id": message.incident_id,
        "title": message.title,
    }
    if sns is None:  # the notifier does not queue SNS deliveries without a client
        return Result(None, "no SNS client", retryable=False)
    try:
        await sns.publish(
            TopicArn=delivery.target,
            Message=message.body.decode(),
            Subject=subject(message.stream_id, message.title, message.event),
            MessageAttributes={
                k: {"DataType": "String", "StringValue": v} for k, v in attributes.items() if v
            },
        )
    except Exception as exc:  # every botocore failure is mapped; the lane must go on
        err = aws.map_error(exc)
        return Result(None, f"{type(err).__name__}: {err}"[:300], isinstance(err, aws.RetryableError))
    return Result(200, None, False)
