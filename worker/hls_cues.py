"""Ad cues an HLS media playlist carries, as :class:`worker.transport.cues.Cue` objects.

Read from the tags players and SSAI servers use:

* ``#EXT-X-CUE-OUT:DURATION=30`` (or ``:30``) and ``#EXT-X-CUE-IN``: a cue-out / cue-in at the
  segment after the tag. A base64 splice_info_section given with the cue-out (``CUE="..."``,
  ``#EXT-OATCLS-SCTE35``) is decoded for its command, event id and segmentation.
* ``#EXT-X-DATERANGE`` with ``SCTE35-OUT``, ``SCTE35-IN`` or ``SCTE35-CMD`` (RFC 8216 §4.3.2.7.1:
  the splice_info_section in hex), decoded with :func:`worker.scte35.decode_splice_info`; its
  START-DATE is the splice time, DURATION / PLANNED-DURATION the duration when the section has none.

Clock: ``arrival_s`` is when the playlist that first showed the cue was read (the caller's
``now``: wall-clock seconds); ``splice_s`` is the segment's EXT-X-PROGRAM-DATE-TIME or the
DATERANGE's START-DATE when the playlist gives one, else the segment's start estimated from the
window (its end taken as live at ``now``). ``pid`` is -1 (from the playlist, not a TS PID);
``splice_pts_s`` and ``preroll_s`` are None (a playlist gives no PTS, and no splice arrives ahead
of its segment in HLS). ``command`` is the SCTE-35 command when a section was decoded, else the
tag (``EXT-X-CUE-OUT``, ``EXT-X-CUE-IN``, ``EXT-X-DATERANGE``).
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import replace

from worker.hls_playlist import MediaPlaylist, Segment
from worker.transport.cues import Cue, _cues

PLAYLIST_PID = -1
SEEN_MAX = 4096  # cue keys remembered, so that a cue is reported once however long it stays


class PlaylistCues:
    """The cues of one rendition's successive reloads, each reported once (:meth:`read`)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, ...], None] = OrderedDict()

    def read(self, playlist: MediaPlaylist, now: float) -> list[Cue]:
        """The cues of ``playlist`` not seen on an earlier reload, read at ``now``."""
        out: list[Cue] = []
        remaining = playlist.window_s
        for seg in playlist.segments:
            start = seg.pdt_s if seg.pdt_s is not None else now - remaining
            remaining -= seg.duration_s
            if seg.cue_out and self._first(("out", seg.uri)):
                out.append(_tag_cue(seg, now, start, "out"))
            if seg.cue_in and self._first(("in", seg.uri)):
                out.append(_tag_cue(seg, now, start, "in"))
            for d in seg.dateranges:
                for attr, kind, value in (
                    ("out", "out", d.scte35_out),
                    ("in", "in", d.scte35_in),
                    ("cmd", None, d.scte35_cmd),
                ):
                    if value is None or not self._first(("daterange", d.id, attr, value[:64])):
                        continue
                    splice = d.start_s if d.start_s is not None else start
                    out += _section_cues(_hex(value), now, splice, d.duration_s, kind, "EXT-X-DATERANGE")
        return out

    def _first(self, key: tuple[str, ...]) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True


def _tag_cue(seg: Segment, now: float, splice: float, kind: str) -> Cue:
    if kind == "out" and seg.cue_scte35:
        try:
            section = base64.b64decode(seg.cue_scte35, validate=True)
        except (binascii.Error, ValueError):
            section = None
        if section:
            return _section_cues(section, now, splice, seg.cue_out_duration_s, kind, "EXT-X-CUE-OUT")[0]
    tag = "EXT-X-CUE-OUT" if kind == "out" else "EXT-X-CUE-IN"
    duration = seg.cue_out_duration_s if kind == "out" else None
    return Cue(now, PLAYLIST_PID, tag, kind, None, None, None, splice, duration)


def _hex(text: str) -> bytes | None:
    digits = text.strip()
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    try:
        return bytes.fromhex(digits)
    except ValueError:
        return None


def _section_cues(
    section: bytes | None, now: float, splice: float, duration: float | None, kind: str | None, tag: str
) -> list[Cue]:
    """The cues of one splice_info_section (or of the tag alone when it does not decode)."""
    # Imported here: worker.scte35 imported before worker.transport (as the import order of this
    # module's header would) meets that package half-initialised.
    from worker.scte35 import Scte35Error, decode_splice_info

    if section is not None:
        try:
            info = decode_splice_info(section)
        except Scte35Error:
            info = None
        if info is not None:
            return [
                replace(
                    c,
                    splice_s=splice,
                    preroll_s=None,
                    duration_s=c.duration_s if c.duration_s is not None else duration,
                    kind=c.kind if c.kind is not None else kind,
                )
                for c in _cues(info, PLAYLIST_PID, now, None)
            ]
    return [Cue(now, PLAYLIST_PID, tag, kind, None, None, None, splice, duration)]
