"""Defect notifications: signed webhook POSTs and SNS messages, grouped into incidents, no storms.

The worker feeds every defect record the sink has durably written (``DefectWriter.on_written``)
to :meth:`Notifier.submit`, and every written cue to :meth:`Notifier.submit_cue`; both return at
once, delivery runs in background tasks of the same event loop.

One concept a module, dependencies one way (top to bottom):

* :mod:`~worker.notify.incidents`: when a defect becomes an incident, re-notifies (a flap folded
  into its episode) and resolves: the events and their suppression rules, pure, on a clock;
* :mod:`~worker.notify.messages`: the JSON bodies, for incident events and cues (one builder);
* :mod:`~worker.notify.signing`: the webhook headers and their HMAC signature (receivers:
  :func:`verify_signature`);
* :mod:`~worker.notify.delivery`: one message to one target: the webhook POST, retries with
  backoff (``shared/retry.py``), the delivery log (:class:`DeliveryRecord`);
* :mod:`~worker.notify.sns`: the SNS ``Publish`` transport;
* :mod:`~worker.notify.lanes`: per-target ordered queues under one bound;
* :mod:`~worker.notify.notifier`: :class:`Notifier`, which composes them, and :class:`Targets`.
"""

from worker.notify.delivery import DeliveryRecord, Outcome, RecordCallback, redact_target
from worker.notify.incidents import CLOSED, OPENED, incident_title
from worker.notify.messages import BODY_VERSION, CUE
from worker.notify.notifier import Notifier, Targets
from worker.notify.signing import SIGNATURE_TOLERANCE_S, USER_AGENT, sign, verify_signature

__all__ = [
    "BODY_VERSION",
    "CLOSED",
    "CUE",
    "OPENED",
    "SIGNATURE_TOLERANCE_S",
    "USER_AGENT",
    "DeliveryRecord",
    "Notifier",
    "Outcome",
    "RecordCallback",
    "Targets",
    "incident_title",
    "redact_target",
    "sign",
    "verify_signature",
]
