"""The live outputs of the test-signal generator, kept here for importers of ``avmon.livesrc``:
they live in ``avmon.testsrc.live`` (UDP, RTMP) and ``avmon.testsrc.hls`` (HLS)."""

from avmon.testsrc.cli import run_live as run_cli
from avmon.testsrc.hls import Playlist
from avmon.testsrc.live import DATAGRAM, KINDS, LIVE_TS_OPTIONS, LiveSource

__all__ = ["DATAGRAM", "KINDS", "LIVE_TS_OPTIONS", "LiveSource", "Playlist", "run_cli"]
