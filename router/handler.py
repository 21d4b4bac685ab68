"""The Lambda entry point: function-URL requests go to the API, scheduled events to housekeeping."""

from __future__ import annotations

from typing import Any

from router import housekeeping
from router.api import app, deps


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("source") == "aws.events" or event.get("detail-type") == "Scheduled Event":
        return housekeeping.run(deps())
    return app.resolve(event, context)
