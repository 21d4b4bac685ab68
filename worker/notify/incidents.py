"""When written defects become notifications: incidents, re-notification and resolution.

Pure logic on an injected clock (``clock()``: seconds, monotonic in production): defect records in,
batches of events (:class:`Batch`) out; no I/O, no asyncio. The notifier
(``worker/notify/notifier.py``) feeds it and turns each due batch into one message.

Events
------
* ``defect.opened``: the first record of a ``defect_id`` (an open record, ``end_s`` null).
* ``defect.closed``: its close record. A defect that arrives already closed (it opened and closed
  between two sink flushes) gives ``defect.opened`` and then ``defect.closed``. Each
  ``(defect_id, event)`` is sent once, however often the sink writes the record.

Suppression
-----------
* Hysteresis: a close is held for ``min_gap_s`` (10 s) before it is sent. If a defect of the same
  stream and type opens meanwhile and starts less than ``min_gap_s`` (media time) after the held
  one ended, it is *folded* into it: no ``defect.opened`` for it, and the eventual single
  ``defect.closed`` (under the first defect's ``defect_id``) carries ``flaps`` (how many
  re-occurrences were folded), ``folded_defect_ids``, and ``end_s``/``end_at`` of the last one.
  A flapping detector therefore gives one open/close pair per episode. A same-type defect that
  starts later than that releases the held close first.
* Incidents: defects of one stream whose ``start_s`` lie within ``group_window_s`` (2 s, media
  time) of an incident's first defect belong to that incident (``incident_id`` =
  ``"inc-" + first defect_id``: unique within the stream, like defect ids, and deterministic, so
  another worker reading the same defects names it the same; a defect that joins an incident
  whose defects have all closed re-opens it). Its ``title`` is ``"feed lost"`` when it holds
  both ``black`` and ``silence``, else its types joined by ``" + "`` (``"black + freeze"``,
  ``"silence"``). It is closed once every defect in it has been notified closed.
* Coalescing: events of one incident and one kind that are produced within ``coalesce_s``
  (1 s, wall clock) of the first go out in one message, so black + silence of a lost feed arrive
  as one POST with two events (both detectors need the same 2 s, so their records come within a
  sink flush or two of each other). A defect that joins the incident later gets its own message,
  with the same ``incident_id`` and the updated title.
* Acknowledgement: an episode an operator acknowledged produces no more events.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.models import Defect, DefectType

log = logging.getLogger("avmon.worker.notify")

OPENED = "defect.opened"
CLOSED = "defect.closed"
_SEEN_MAX = 50_000  # (defect_id, event) pairs remembered for dedupe: hours of a busy worker
_INCIDENTS_PER_STREAM = 32
_TYPE_ORDER = {t.value: i for i, t in enumerate(DefectType)}


def incident_title(types: Iterable[str]) -> str:
    """``feed lost`` for black with silence; otherwise the types in a fixed order, joined."""
    present = set(types)
    if {DefectType.BLACK.value, DefectType.SILENCE.value} <= present:
        return "feed lost"
    return " + ".join(sorted(present, key=lambda t: (_TYPE_ORDER.get(t, len(_TYPE_ORDER)), t)))


@dataclass(eq=False)
class Incident:
    """Defects of one stream that started within ``group_window_s`` of its first one."""

    incident_id: str
    stream_id: str
    anchor_s: float  # start_s of its first defect
    chains: list[_Chain] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """Its state now, JSON-safe: the ``incident`` of a message body."""
        first = min(self.chains, key=lambda c: c.first.start_s)
        closed = all(c.released for c in self.chains)
        last = max(self.chains, key=lambda c: c.end_s or 0.0) if closed else None
        return {
            "incident_id": self.incident_id,
            "stream_id": self.stream_id,
            "title": incident_title(c.first.type.value for c in self.chains),
            "state": "closed" if closed else "open",
            "types": sorted({c.first.type.value for c in self.chains}, key=lambda t: _TYPE_ORDER.get(t, 99)),
            "defect_ids": [c.first.defect_id for c in self.chains],
            "start_s": first.first.start_s,
            "start_at": first.first.start_at,
            "end_s": None if last is None else last.end_s,
            "end_at": None if last is None or last.last_close is None else last.last_close.end_at,
        }


@dataclass(eq=False)
class _Chain:
    """A notified defect, with the re-occurrences folded into it (a flapping episode)."""

    first: Defect  # its open record (end_s None)
    incident: Incident
    members: list[str]  # defect ids: the first, then the folded ones
    open_members: set[str]
    own_close: Defect | None = None  # the first defect's close record
    last_close: Defect | None = None  # the latest-ending close record of any member
    held_until: float | None = None  # clock() deadline while the close is held
    released: bool = False
    acknowledged: bool = False  # an operator took it: no more events for it

    @property
    def key(self) -> tuple[str, str]:
        return self.first.stream_id, self.first.type.value

    @property
    def end_s(self) -> float | None:
        return None if self.last_close is None else self.last_close.end_s


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One event of one episode: an entry of a message's ``events``."""

    event: str  # OPENED or CLOSED
    incident_id: str
    episode_id: str  # the episode's first defect_id: the event is named after it
    defect: Defect  # the record sent (a folded close carries the end of the last re-occurrence)
    folded_defect_ids: tuple[str, ...] = ()  # closes only

    @property
    def event_id(self) -> str:
        """Stable across retries and workers: receivers dedupe on it."""
        return f"{self.episode_id}/{self.event}"

    @property
    def flaps(self) -> int:
        """How many re-occurrences were folded into the episode."""
        return len(self.folded_defect_ids)


@dataclass(eq=False)
class Batch:
    """Events of one incident and one kind, coalesced into one message; due at ``due`` (clock)."""

    incident: Incident
    event: str
    due: float
    seq: int  # order of creation: batches go out in it
    events: list[IncidentEvent] = field(default_factory=list)


class IncidentTracker:
    """Derives notification events from written defect records (see the module docstring).

    ``group_window_s`` and the fold test of ``min_gap_s`` compare media times; the waits
    (``coalesce_s``, the hold of ``min_gap_s``) are ``clock()`` seconds.
    """

    def __init__(
        self,
        *,
        group_window_s: float = 2.0,
        coalesce_s: float = 1.0,
        min_gap_s: float = 10.0,
        clock: Callable[[], float],
    ) -> None:
        self.group_window_s, self.coalesce_s, self.min_gap_s = group_window_s, coalesce_s, min_gap_s
        self.clock = clock
        # Counters (for metrics).
        self.acknowledged = 0  # episodes silenced by an acknowledgement
        self.events = 0
        self.folded = 0
        # Defect ids are unique within a stream only: state is keyed by (stream_id, defect_id).
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._chain_of: dict[tuple[str, str], _Chain] = {}
        self._held: dict[tuple[str, str], list[_Chain]] = {}
        self._incidents: dict[str, deque[Incident]] = {}
        self._outbox: dict[tuple[str, str, str], Batch] = {}  # (stream, incident, event)
        self._seq = 0

    # -------------------------------------------------------------- input

    def submit(self, defect: Defect) -> None:
        """A defect record was durably written (the same record may come again)."""
        did = defect.defect_id
        if self._first_time(defect.stream_id, did, OPENED):
            opened = (
                defect if defect.end_s is None else defect.model_copy(update={"end_s": None, "end_at": None})
            )
            self._on_open(opened)
        if defect.end_s is not None and self._first_time(defect.stream_id, did, CLOSED):
            self._on_close(defect)

    def end_stream(self, stream_id: str) -> None:
        """The stream's records are all written: release its held closes now (nothing can re-open
        them) instead of after ``min_gap_s``, and forget its incidents once all are closed."""
        for chains in list(self._held.values()):
            for chain in list(chains):
                if chain.first.stream_id == stream_id:
                    self._release_close(chain)
        incidents = self._incidents.get(stream_id)
        if incidents is not None and all(c.released for inc in incidents for c in inc.chains):
            del self._incidents[stream_id]

    def acknowledge(self, stream_id: str, defect_ids: Iterable[str]) -> None:
        """Operators acknowledged these defects: their episodes produce nothing more, their close
        and any re-occurrence folded into them included."""
        for defect_id in defect_ids:
            chain = self._chain_of.get((stream_id, defect_id))
            if chain is not None and not chain.acknowledged:
                chain.acknowledged = True
                self.acknowledged += 1

    # -------------------------------------------------------------- output

    def due(self, *, everything: bool = False) -> list[Batch]:
        """Release the held closes whose hold is over, then take the batches that are due (all of
        them with ``everything``), oldest first."""
        now = self.clock()
        for chains in list(self._held.values()):
            for chain in list(chains):
                if everything or (chain.held_until is not None and chain.held_until <= now):
                    self._release_close(chain)
        taken = []
        for batch in sorted(self._outbox.values(), key=lambda b: b.seq):
            if everything or batch.due <= now:
                del self._outbox[(batch.incident.stream_id, batch.incident.incident_id, batch.event)]
                taken.append(batch)
        return taken

    def next_deadline(self) -> float | None:
        """The ``clock()`` time at which :meth:`due` next has something, if anything is waiting."""
        times = [b.due for b in self._outbox.values()]
        times += [c.held_until for cs in self._held.values() for c in cs if c.held_until is not None]
        return min(times, default=None)

    @property
    def pending(self) -> int:
        """Batches not yet taken and closes still held."""
        return len(self._outbox) + sum(len(c) for c in self._held.values())

    # -------------------------------------------------------------- rules

    def _first_time(self, stream_id: str, defect_id: str, event: str) -> bool:
        key = (stream_id, defect_id, event)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def _on_open(self, defect: Defect) -> None:
        key = (defect.stream_id, defect.type.value)
        held = self._held.get(key)
        if held:
            chain = max(held, key=lambda c: c.end_s or 0.0)
            if defect.start_s - (chain.end_s or 0.0) < self.min_gap_s:
                # The same trouble again before it was declared over: fold, say nothing yet.
                held.remove(chain)
                if not held:
                    del self._held[key]
                chain.held_until = None
                chain.members.append(defect.defect_id)
                chain.open_members.add(defect.defect_id)
                self._chain_of[(defect.stream_id, defect.defect_id)] = chain
                self.folded += 1
                log.info(
                    "%s %s re-opened %.1f s after %s closed: folded",
                    defect.stream_id,
                    defect.defect_id,
                    defect.start_s - (chain.end_s or 0.0),
                    chain.first.defect_id,
                )
                return
            for earlier in list(held):  # a separate occurrence: the earlier episodes are over
                self._release_close(earlier)
        incident = self._incident_for(defect)
        chain = _Chain(
            first=defect,
            incident=incident,
            members=[defect.defect_id],
            open_members={defect.defect_id},
        )
        incident.chains.append(chain)
        self._chain_of[(defect.stream_id, defect.defect_id)] = chain
        self._add_event(chain, OPENED, defect)

    def _incident_for(self, defect: Defect) -> Incident:
        incidents = self._incidents.setdefault(defect.stream_id, deque(maxlen=_INCIDENTS_PER_STREAM))
        for incident in reversed(incidents):
            if abs(defect.start_s - incident.anchor_s) <= self.group_window_s:
                return incident
        incident = Incident(f"inc-{defect.defect_id}", defect.stream_id, defect.start_s)
        incidents.append(incident)
        return incident

    def _on_close(self, defect: Defect) -> None:
        chain = self._chain_of.get((defect.stream_id, defect.defect_id))
        if chain is None:  # only if its open fell out of the dedupe memory long ago
            log.warning("close of unknown defect %s/%s ignored", defect.stream_id, defect.defect_id)
            return
        chain.open_members.discard(defect.defect_id)
        if defect.defect_id == chain.first.defect_id:
            chain.own_close = defect
        if chain.last_close is None or (defect.end_s or 0.0) >= (chain.last_close.end_s or 0.0):
            chain.last_close = defect
        if chain.open_members:
            return
        if self.min_gap_s <= 0:
            self._release_close(chain)
        else:
            chain.held_until = self.clock() + self.min_gap_s
            self._held.setdefault(chain.key, []).append(chain)

    def _release_close(self, chain: _Chain) -> None:
        held = self._held.get(chain.key)
        if held is not None and chain in held:
            held.remove(chain)
            if not held:
                del self._held[chain.key]
        chain.held_until = None
        chain.released = True
        for member in chain.members:
            self._chain_of.pop((chain.first.stream_id, member), None)
        last = chain.last_close
        record = chain.own_close or last
        if record is None:  # not reachable: a chain is released only once all members closed
            return
        if last is not None and last is not record:
            record = record.model_copy(update={"end_s": last.end_s, "end_at": last.end_at})
        self._add_event(chain, CLOSED, record, folded=tuple(chain.members[1:]))

    def _add_event(self, chain: _Chain, event: str, defect: Defect, folded: tuple[str, ...] = ()) -> None:
        if chain.acknowledged:
            return
        self.events += 1
        incident = chain.incident
        key = (incident.stream_id, incident.incident_id, event)
        batch = self._outbox.get(key)
        if batch is None:
            self._seq += 1
            batch = Batch(incident, event, due=self.clock() + self.coalesce_s, seq=self._seq)
            self._outbox[key] = batch
        batch.events.append(IncidentEvent(event, incident.incident_id, chain.first.defect_id, defect, folded))
