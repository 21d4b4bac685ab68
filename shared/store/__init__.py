"""The tables: item shapes and every DynamoDB request the system makes, as pure functions.

Each function returns the keyword arguments of one low-level client call, so the router (boto3)
and the worker (aioboto3) send exactly the same requests and this package needs no AWS to test.
One module per concept:

- :mod:`~shared.store.codec`: marshalling, page tokens, the ``Request``/``Item`` shapes;
- :mod:`~shared.store.tables`: the table names;
- :mod:`~shared.store.streams`: the streams table (desired state), its item documented there;
- :mod:`~shared.store.leases`: claim, steal, renew, release (the fencing counter);
- :mod:`~shared.store.workers`: the worker registry;
- :mod:`~shared.store.deliveries`: the notification delivery log;
- :mod:`~shared.store.defects`: defect records (evidence inline) and fenced writes;
- :mod:`~shared.store.live`: the live picture of each stream (``~live``);
- :mod:`~shared.store.acks`: acknowledgements, kept on the stream's item;
- :mod:`~shared.store.events`: events such as SCTE-35 cues (``~ev#`` + the event's id).

Defects table item (key ``stream_id`` + ``defect_id``): the fields of :class:`shared.models.Defect`
plus ``expires_at`` (epoch s, the table's TTL attribute). The same partition holds the stream's
events (``defect_id`` = ``~ev#`` + the event's id, :func:`event_item`) and its live picture
(``~live``): both sort after every defect id (those start with a digit).

Callers import the package (``from shared import store``; ``store.claim_lease(...)``): every
name below is re-exported here.
"""

from __future__ import annotations

from shared.store.acks import ACK_PREFIX, MAX_ACKS, acknowledge_defect, acks_of
from shared.store.codec import (
    Item,
    Request,
    decode_page_token,
    encode_page_token,
    marshal,
    unmarshal,
)
from shared.store.defects import (
    DEFECT_FIELDS,
    defect_item,
    fenced_defect_writes,
    get_defect_exists,
    get_evidence,
    query_defects,
)
from shared.store.deliveries import put_delivery, query_deliveries
from shared.store.events import EVENT_PREFIX, NOT_DEFECTS, event_from_item, event_item, query_events
from shared.store.leases import claim_lease, release_lease, renew_lease, steal_lease
from shared.store.live import (
    LIVE_PICTURE_ID,
    LIVE_PICTURE_TTL_S,
    get_live_picture,
    get_live_pictures,
    is_live_item,
    put_live_picture,
)
from shared.store.streams import (
    get_stream,
    mark_enqueued,
    put_new_stream,
    scan_orphans,
    scan_running,
    scan_streams,
    stop_stream,
    stream_from_item,
)
from shared.store.tables import Tables
from shared.store.workers import scan_workers, worker_goodbye, worker_heartbeat

__all__ = [
    "ACK_PREFIX",
    "DEFECT_FIELDS",
    "EVENT_PREFIX",
    "LIVE_PICTURE_ID",
    "LIVE_PICTURE_TTL_S",
    "MAX_ACKS",
    "NOT_DEFECTS",
    "Item",
    "Request",
    "Tables",
    "acknowledge_defect",
    "acks_of",
    "claim_lease",
    "decode_page_token",
    "defect_item",
    "encode_page_token",
    "event_from_item",
    "event_item",
    "fenced_defect_writes",
    "get_defect_exists",
    "get_evidence",
    "get_live_picture",
    "get_live_pictures",
    "get_stream",
    "is_live_item",
    "mark_enqueued",
    "marshal",
    "put_delivery",
    "put_live_picture",
    "put_new_stream",
    "query_defects",
    "query_deliveries",
    "query_events",
    "release_lease",
    "renew_lease",
    "scan_orphans",
    "scan_running",
    "scan_streams",
    "scan_workers",
    "steal_lease",
    "stop_stream",
    "stream_from_item",
    "unmarshal",
    "worker_goodbye",
    "worker_heartbeat",
]
