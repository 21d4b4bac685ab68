"""The message bodies: one JSON document for webhooks and as the SNS ``Message``.

Incident events (:mod:`worker.notify.incidents`)::

    {
      "version": 1,
      "event": "defect.opened" | "defect.closed",   # every event in one body is of this kind
      "stream_id": "...",
      "created_at": "2026-01-01T00:00:00.000Z",     # when this message was formed
      "incident": {
        "incident_id": "inc-000000012.480-black",
        "stream_id": "...",
        "title": "feed lost",
        "state": "open" | "closed",
        "types": ["black", "silence"],
        "defect_ids": ["000000012.480-black", "000000012.520-silence"],
        "start_s": 12.48, "start_at": "...",
        "end_s": null | 30.1, "end_at": null | "..."      # set when closed
      },
      "events": [
        {
          "event_id": "000000012.480-black/defect.opened",   # stable: dedupe on it
          "event": "defect.opened",
          "incident_id": "inc-000000012.480-black",
          "defect": { ...the defect record, DESIGN.md §4 (end_s null in an opened event)... },
          "flaps": 0,
          "folded_defect_ids": []
        }
      ]
    }

Cues (``cue``, SCTE-35 events, ``GET /streams/{id}/events``) go to the same targets, one
message each as it is written, neither grouped nor held::

    {"version": 1, "event": "cue", "stream_id": "...", "created_at": "...",
     "cue": { ...the event record: type, kind, start_s, splice_s, duration_s, ... }}

Both are formed by the one builder, :func:`_message`: the common head, then the content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.models import Event, utc_now_iso
from worker.notify.incidents import Batch, IncidentEvent

CUE = "cue"
BODY_VERSION = 1


@dataclass(frozen=True, slots=True)
class Message:
    """One body, with what the delivery log, the headers and SNS attributes say about it."""

    stream_id: str
    event: str  # the body's ``event``
    incident_id: str  # a cue's event_id for a cue
    title: str
    defect_ids: tuple[str, ...]
    body: bytes  # UTF-8 JSON, compact


def incident_message(batch: Batch) -> Message:
    """The message of one coalesced batch, with the incident as it stands now."""
    incident = batch.incident
    snapshot = incident.snapshot()
    return _message(
        {"incident": snapshot, "events": [_event_entry(e) for e in batch.events]},
        stream_id=incident.stream_id,
        event=batch.event,
        incident_id=incident.incident_id,
        title=str(snapshot["title"]),
        defect_ids=tuple(e.defect.defect_id for e in batch.events),
    )


def cue_message(event: Event) -> Message:
    """The message of one written cue event: neither grouped nor held."""
    return _message(
        {"cue": event.model_dump(mode="json")},
        stream_id=event.stream_id,
        event=CUE,
        incident_id=event.event_id,
        title=f"{event.type} {event.kind or ''}".strip(),
        defect_ids=(),
    )


def _event_entry(event: IncidentEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event": event.event,
        "incident_id": event.incident_id,
        "defect": event.defect.model_dump(mode="json"),
        "flaps": event.flaps,  # 0 and [] in an opened event
        "folded_defect_ids": list(event.folded_defect_ids),
    }


def _message(
    content: dict[str, Any],
    *,
    stream_id: str,
    event: str,
    incident_id: str,
    title: str,
    defect_ids: tuple[str, ...],
) -> Message:
    """The common head (version, event, stream, when formed), then ``content``."""
    head = {"version": BODY_VERSION, "event": event, "stream_id": stream_id, "created_at": utc_now_iso()}
    body = json.dumps({**head, **content}, separators=(",", ":")).encode()
    return Message(stream_id, event, incident_id, title, defect_ids, body)
