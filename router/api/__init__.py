"""The HTTP API (DESIGN.md §5) as small routes on Powertools' function-URL resolver.

One concept a module, dependencies one way (top to bottom); importing the package registers
every route on :data:`app`:

* :mod:`~router.api.core`: the resolver, :class:`Deps`, errors, JSON answers, request reading;
* :mod:`~router.api.streams`: the stream routes (create, list, read, stop);
* :mod:`~router.api.defects`: defects, events, deliveries, evidence, acknowledgements;
* :mod:`~router.api.wall`: the live wall, the live pictures and the style sheets;
* ``router/ui.py``: the operator's pages and their form actions.
"""

from router.api.core import (
    DEFECT_ID,
    JSON_HEADERS,
    MAX_BODY_BYTES,
    ApiError,
    Deps,
    app,
    call,
    deps,
    send_assignment,
)
from router.api.defects import (
    acknowledge_defect,
    get_evidence,
    get_thumbnail,
    list_defects,
    list_deliveries,
    list_events,
)
from router.api.streams import create_stream, delete_stream, get_stream, list_streams
from router.api.wall import get_live_picture, get_static, web_page

__all__ = [
    "DEFECT_ID",
    "JSON_HEADERS",
    "MAX_BODY_BYTES",
    "ApiError",
    "Deps",
    "acknowledge_defect",
    "app",
    "call",
    "create_stream",
    "delete_stream",
    "deps",
    "get_evidence",
    "get_live_picture",
    "get_static",
    "get_stream",
    "get_thumbnail",
    "list_defects",
    "list_deliveries",
    "list_events",
    "list_streams",
    "send_assignment",
    "web_page",
]

# The operator's pages and their form actions live in router/ui.py; importing it registers them.
from router import ui  # noqa: F401
