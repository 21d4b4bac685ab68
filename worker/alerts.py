"""Who hears of a defect or a cue once its record is written: the deployment's webhooks and SNS
topic, and the stream's own webhook, through one :class:`worker.notify.Notifier` whose deliveries
are logged in DynamoDB."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from shared import aws, store
from shared.models import Defect, Event
from shared.settings import WorkerSettings
from shared.urlpolicy import check_url
from worker.leases import call
from worker.notify import DeliveryRecord, Notifier, Targets

log = logging.getLogger("avmon.worker")


class Alerts:
    """``webhook_of``: the webhook a stream's own request named (None: none, or not held here)."""

    def __init__(
        self,
        settings: WorkerSettings,
        tables: store.Tables,
        ddb: Any,
        sns: Any,
        webhook_of: Callable[[str], str | None],
    ) -> None:
        self.settings, self.tables, self.ddb, self.webhook_of = settings, tables, ddb, webhook_of
        s = settings
        self.notifier = Notifier(
            secret=s.webhook_secret,
            sns=sns if s.defect_topic_arn else None,
            record=self._record,
            url_check=partial(
                check_url, schemes=frozenset({"http", "https"}), allow_private=s.allow_private_hosts
            ),
            min_gap_s=s.notify_min_gap_s,
        )

    async def _record(self, delivery: DeliveryRecord) -> None:
        request = store.put_delivery(
            self.tables, delivery.to_item(), ttl_days=self.settings.defect_ttl_days, now=time.time()
        )
        try:
            await call(self.ddb.put_item, **request)
        except aws.AvmonError as exc:
            log.warning("delivery log write failed: %s", exc)

    def defect_written(self, defect: Defect) -> None:
        """A defect record is durably written: tell whoever listens (returns at once)."""
        targets = self._targets(defect.stream_id)
        if targets.webhook_urls or targets.sns_topic_arn:
            self.notifier.submit(defect, targets)

    def cue_written(self, event: Event) -> None:
        """A cue event is written: pushed to the same targets as the stream's defects."""
        targets = self._targets(event.stream_id)
        if targets.webhook_urls or targets.sns_topic_arn:
            self.notifier.submit_cue(event, targets)

    def _targets(self, stream_id: str) -> Targets:
        s = self.settings
        return Targets.from_settings(s.webhook_urls, self.webhook_of(stream_id), s.defect_topic_arn)
