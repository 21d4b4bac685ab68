"""HLS playlists (RFC 8216) parsed with the ``m3u8`` package into the few facts avmon judges.

Everything here is pure: playlist text in, frozen dataclasses out. A playlist is hostile input
(DESIGN.md "Trust"): whatever ``m3u8`` raises on it becomes :class:`PlaylistMalformed`, and only
bounded amounts are kept (:data:`MAX_RENDITIONS` renditions of a master).

``m3u8`` is lenient and fast enough for a playlist per target duration per rendition (about
0.1 ms for a six-segment window). One departure from it: ``#EXT-X-TARGETDURATION`` is read as a
decimal, as FFmpeg reads it, where ``m3u8`` would refuse ``6.5`` (RFC 8216 §4.3.3.1 says
decimal-integer; some packagers write a fraction, and a monitor should judge such a playlist, not
drop it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

# A ladder is rarely over 10 renditions; a master listing more is judged on its first 16 (the
# worker's probe reads as many, worker.media.PROBE_MAX_VARIANTS).
MAX_RENDITIONS = 16
_TARGET_TAG = "#EXT-X-TARGETDURATION:"


class PlaylistMalformed(ValueError):
    """The text is no playlist ``m3u8`` can read (a value of the wrong type, a broken tag)."""


@dataclass(frozen=True, slots=True)
class DateRange:
    """One ``#EXT-X-DATERANGE`` before a segment: its ID, START-DATE (epoch s, None if absent or
    unreadable), DURATION or PLANNED-DURATION (s) and the SCTE-35 attributes (hex text)."""

    id: str
    start_s: float | None
    duration_s: float | None
    scte35_out: str | None = None
    scte35_in: str | None = None
    scte35_cmd: str | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """One media segment of a media playlist, with its media sequence number."""

    msn: int
    uri: str  # absolute
    duration_s: float  # EXTINF
    discontinuity: bool = False  # an EXT-X-DISCONTINUITY precedes it
    pdt_s: float | None = None  # EXT-X-PROGRAM-DATE-TIME (given or carried on), epoch s
    cue_out: bool = False  # EXT-X-CUE-OUT precedes it (the break starts here)
    cue_out_duration_s: float | None = None
    cue_in: bool = False  # EXT-X-CUE-IN precedes it
    cue_scte35: str | None = None  # a base64 splice_info_section given with the cue-out, if any
    dateranges: tuple[DateRange, ...] = ()


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    target_s: float | None  # EXT-X-TARGETDURATION (s)
    media_sequence: int
    discontinuity_sequence: int
    segments: tuple[Segment, ...]
    endlist: bool
    playlist_type: str | None  # "VOD", "EVENT" or None

    @property
    def live(self) -> bool:
        """Reloaded by players: segments may still be added (no ENDLIST, not VOD)."""
        return not self.endlist and self.playlist_type != "VOD"

    @property
    def newest_msn(self) -> int | None:
        return self.segments[-1].msn if self.segments else None

    @property
    def window_s(self) -> float:
        return sum(s.duration_s for s in self.segments)

    def discontinuity_numbers(self) -> dict[int, int]:
        """Each segment's Discontinuity Sequence Number by media sequence (RFC 8216 §6.2.2): the
        EXT-X-DISCONTINUITY-SEQUENCE plus the EXT-X-DISCONTINUITY tags before its URI, the first
        segment's own included (a tag stays until the segment it precedes leaves the window)."""
        out: dict[int, int] = {}
        number = self.discontinuity_sequence
        for s in self.segments:
            number += s.discontinuity
            out[s.msn] = number
        return out


@dataclass(frozen=True, slots=True)
class Rendition:
    """A media playlist a master names: a variant (EXT-X-STREAM-INF) or an alternative rendition
    (EXT-X-MEDIA with a URI). ``key`` names it in findings: ``v0``, ``v1``... for variants in the
    master's order, ``audio0``, ``subtitles0``... for the others."""

    key: str
    uri: str  # absolute
    kind: str  # "variant", "audio", "subtitles", "closed-captions", "video"
    bandwidth: int = 0  # BANDWIDTH (variants)
    resolution: str | None = None


@dataclass(frozen=True, slots=True)
class MasterPlaylist:
    renditions: tuple[Rendition, ...]
    truncated: bool = False  # it named more than MAX_RENDITIONS: the first ones are kept

    @property
    def variants(self) -> tuple[Rendition, ...]:
        return tuple(r for r in self.renditions if r.kind == "variant")


@dataclass(frozen=True, slots=True)
class Parsed:
    master: MasterPlaylist | None = None
    media: MediaPlaylist | None = None
    nested: tuple[str, ...] = field(default=())  # every playlist URI a master names, absolute


def _lenient_target(line: str, lineno: int, data: dict[str, Any], state: dict[str, Any]) -> bool:
    if line.startswith(_TARGET_TAG):
        try:
            data["targetduration"] = float(line[len(_TARGET_TAG) :].strip())
        except ValueError:
            data["targetduration"] = None
        return True
    return False


def _epoch(value: Any) -> float | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # RFC 8216 requires a zone; none given reads as UTC
    return float(value.timestamp())


def _date(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return _epoch(datetime.fromisoformat(text.strip()))
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    """A finite number, or None (absent, unreadable, NaN or infinite)."""
    try:
        number = None if value is None else float(value)
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _duration(value: Any) -> float:
    number = _number(value if value is not None else 0.0)
    if number is None:
        raise PlaylistMalformed(f"EXTINF {value!r} is no duration")
    return number


def parse(body: bytes | str, base_url: str) -> Parsed:
    """A playlist's text (``base_url``: where it was fetched, for relative URIs), parsed.

    Raises :class:`PlaylistMalformed` when ``m3u8`` cannot read it."""
    import m3u8  # here, not at the top: the package pulls in urllib.request (`avmon analyze` starts leaner)

    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = m3u8.parse(text, custom_tags_parser=_lenient_target)
        return _master(data, base_url) if _is_master_data(data) else _media(data, base_url)
    except PlaylistMalformed:
        raise
    except Exception as exc:  # m3u8 raises what its casts raise (ValueError, KeyError, TypeError...)
        raise PlaylistMalformed(f"unreadable playlist: {type(exc).__name__}: {exc}"[:200]) from exc


def _is_master_data(data: dict[str, Any]) -> bool:
    # As FFmpeg's and the probe's view: variants named, and no target duration of its own.
    return bool(data.get("playlists")) and data.get("targetduration") is None


def is_master(body: bytes) -> bool:
    """Whether ``body`` is a master playlist (variants, no EXT-X-TARGETDURATION). Text that is no
    playlist at all is not a master."""
    try:
        return parse(body, "http://localhost/").master is not None
    except PlaylistMalformed:
        return False


def _master(data: dict[str, Any], base: str) -> Parsed:
    renditions: list[Rendition] = []
    nested: list[str] = []
    for i, p in enumerate(data.get("playlists") or []):
        info = p.get("stream_info") or {}
        uri = urljoin(base, str(p["uri"]).strip())
        nested.append(uri)
        bandwidth = info.get("bandwidth")
        renditions.append(
            Rendition(
                key=f"v{i}",
                uri=uri,
                kind="variant",
                bandwidth=bandwidth if isinstance(bandwidth, int) else 0,
                resolution=str(info["resolution"]) if info.get("resolution") else None,
            )
        )
    counts: dict[str, int] = {}
    for m in data.get("media") or []:
        if not m.get("uri"):
            continue  # carried in the variant's own segments
        uri = urljoin(base, str(m["uri"]).strip())
        nested.append(uri)
        kind = str(m.get("type") or "media").lower()
        n = counts[kind] = counts.get(kind, -1) + 1
        renditions.append(Rendition(key=f"{kind}{n}", uri=uri, kind=kind))
    nested += [urljoin(base, str(p["uri"]).strip()) for p in data.get("iframe_playlists") or []]
    unique = list(dict.fromkeys(nested))
    kept: dict[str, Rendition] = {}
    for r in renditions:
        kept.setdefault(r.uri, r)  # one state per playlist, however many entries name it
    chosen = list(kept.values())
    master = MasterPlaylist(tuple(chosen[:MAX_RENDITIONS]), truncated=len(chosen) > MAX_RENDITIONS)
    return Parsed(master=master, nested=tuple(unique))


def _media(data: dict[str, Any], base: str) -> Parsed:
    target = _number(data.get("targetduration"))
    target = target if target is not None and target > 0 else None
    first = int(data.get("media_sequence") or 0)
    segments = []
    for i, s in enumerate(data.get("segments") or []):
        dateranges = tuple(
            DateRange(
                id=str(d.get("id") or ""),
                start_s=_date(d.get("start_date")),
                duration_s=_number(d.get("duration", d.get("planned_duration"))),
                scte35_out=d.get("scte35_out"),
                scte35_in=d.get("scte35_in"),
                scte35_cmd=d.get("scte35_cmd"),
            )
            for d in s.get("dateranges") or []
        )
        pdt = s.get("program_date_time") or s.get("current_program_date_time")
        segments.append(
            Segment(
                msn=first + i,
                uri=urljoin(base, str(s["uri"]).strip()),
                duration_s=_duration(s.get("duration")),
                discontinuity=bool(s.get("discontinuity")),
                pdt_s=_epoch(pdt),
                cue_out=bool(s.get("cue_out_start")),
                cue_out_duration_s=_number(s.get("scte35_duration")) if s.get("cue_out_start") else None,
                cue_in=bool(s.get("cue_in")),
                cue_scte35=s.get("scte35") if s.get("cue_out_start") else None,
                dateranges=dateranges,
            )
        )
    playlist_type = data.get("playlist_type")
    media = MediaPlaylist(
        target_s=target,
        media_sequence=first,
        discontinuity_sequence=int(data.get("discontinuity_sequence") or 0),
        segments=tuple(segments),
        endlist=bool(data.get("is_endlist")),
        playlist_type=str(playlist_type).upper() if playlist_type else None,
    )
    return Parsed(media=media)
