"""The HLS delivery rules (worker/hls_health.py) and the playlist reading under them
(worker/hls_playlist.py, worker/hls_cues.py), on playlist text and a clock: no network."""

from __future__ import annotations

import base64

import pytest

from avmon import tscue
from worker.detectors.base import Finding
from worker.hls_cues import PlaylistCues
from worker.hls_health import LadderHealth
from worker.hls_playlist import MasterPlaylist, MediaPlaylist, PlaylistMalformed, is_master, parse

BASE = "http://origin.test/live/"
MASTER = """#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="en",URI="audio.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360,AUDIO="aac"
hi.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180,AUDIO="aac"
lo.m3u8
"""


def media(
    msn: int,
    count: int = 4,
    *,
    target: int = 6,
    name: str = "seg",
    durations: dict[int, float] | None = None,
    dseq: int = 0,
    disc: frozenset[int] = frozenset(),
    pdt0: str | None = None,
    end: bool = False,
    extra: dict[int, list[str]] | None = None,
) -> str:
    """A media playlist of ``count`` segments from media sequence ``msn`` (``{name}{n}.ts``, 6 s
    each unless ``durations`` says), discontinuities before the segments in ``disc``."""
    lines = ["#EXTM3U", f"#EXT-X-TARGETDURATION:{target}", f"#EXT-X-MEDIA-SEQUENCE:{msn}"]
    lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{dseq}")
    if pdt0:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{pdt0}")
    for n in range(msn, msn + count):
        lines += (extra or {}).get(n, [])
        if n in disc:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{(durations or {}).get(n, 6.0)},", f"{name}{n}.ts"]
    if end:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def pl(text: str) -> MediaPlaylist:
    got = parse(text, BASE + "hi.m3u8").media
    assert got is not None
    return got


def single(*reloads: tuple[float, str], health: LadderHealth | None = None) -> list[Finding]:
    """Findings of one media playlist reloaded at the given times (each reload then a tick)."""
    h = health or LadderHealth()
    uri = BASE + "hi.m3u8"
    h.single(uri)
    out: list[Finding] = []
    for now, text in reloads:
        out += h.media(uri, pl(text), now)
        out += h.tick(now)
    return out


def rules(found: list[Finding]) -> list[tuple[str, str, bool]]:
    """(type, rule or '', closed) of each finding."""
    return [(f.type, f.labels.get("rule", ""), f.end_s is not None) for f in found]


def steady(count: int, step: int = 1) -> list[tuple[float, str]]:
    """A healthy live playlist: one new segment per 6 s reload, a window of 4."""
    return [(6.0 * k, media(k * step)) for k in range(count)]


# ------------------------------------------------------------ reading playlists


def test_a_master_names_its_variants_and_renditions_in_order() -> None:
    parsed = parse(MASTER, BASE + "master.m3u8")
    assert parsed.master is not None
    assert [(r.key, r.uri.rsplit("/", 1)[1], r.bandwidth) for r in parsed.master.renditions] == [
        ("v0", "hi.m3u8", 900000), ("v1", "lo.m3u8", 300000), ("audio0", "audio.m3u8", 0),
    ]  # fmt: skip


def test_a_fractional_target_duration_is_read_as_ffmpeg_reads_it() -> None:
    assert pl(media(0).replace("TARGETDURATION:6", "TARGETDURATION:6.5")).target_s == 6.5


def test_a_playlist_m3u8_cannot_read_is_malformed() -> None:
    with pytest.raises(PlaylistMalformed):
        parse("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:twelve\n#EXTINF:6,\na.ts\n", BASE)


@pytest.mark.parametrize("extinf", ["nan", "inf"])
def test_an_extinf_that_is_no_finite_number_is_malformed(extinf: str) -> None:
    with pytest.raises(PlaylistMalformed):
        parse(media(0).replace("#EXTINF:6.0,", f"#EXTINF:{extinf},", 1), BASE)


def test_a_media_playlist_with_a_stray_variant_tag_is_not_a_master() -> None:
    assert is_master(MASTER.encode())
    assert not is_master((media(0) + "#EXT-X-STREAM-INF:BANDWIDTH=1\nx.m3u8\n").encode())


def test_discontinuity_numbers_count_the_tag_before_the_first_segment() -> None:
    assert pl(media(10, dseq=2, disc=frozenset({10, 12}))).discontinuity_numbers() == {
        10: 3,
        11: 3,
        12: 4,
        13: 4,
    }


# ------------------------------------------------------------ one rendition


def test_a_steady_live_playlist_raises_nothing() -> None:
    assert single(*steady(10)) == []


def test_no_new_segment_for_three_target_durations_is_stale_from_the_last_new_one() -> None:
    reloads = [*steady(3), (18.0, media(2)), (24.0, media(2)), (30.0, media(2)), (30.5, media(2))]
    found = single(*reloads)
    assert rules(found) == [("manifest_stale", "", False)]
    assert found[0].start_s == 12.0 and found[0].metrics["limit_s"] == 18.0


def test_a_stale_playlist_closes_at_its_next_new_segment() -> None:
    reloads = [*steady(3), (31.0, media(2)), (36.0, media(3))]
    found = single(*reloads)
    assert rules(found) == [("manifest_stale", "", False), ("manifest_stale", "", True)]
    assert (found[1].start_s, found[1].end_s) == (12.0, 36.0)


def test_a_stale_playlist_that_ends_closes_with_its_endlist() -> None:
    found = single(*steady(3), (31.0, media(2)), (36.0, media(2, end=True)))
    assert rules(found) == [("manifest_stale", "", False), ("manifest_stale", "", True)]
    assert found[1].end_s == 36.0


def test_a_vod_playlist_is_never_stale() -> None:
    assert single((0.0, media(0, end=True)), (100.0, media(0, end=True))) == []


def test_a_media_sequence_going_back_is_one_manifest_error() -> None:
    found = single(*steady(4), (24.0, media(1)), (30.0, media(2)))
    assert rules(found) == [("manifest_error", "media_sequence_decreased", True)]
    assert found[0].metrics == {"previous": 3.0, "media_sequence": 1.0}


def test_one_media_sequence_naming_another_segment_is_a_manifest_error() -> None:
    found = single(*steady(2), (12.0, media(2, name="other")))
    assert rules(found) == [("manifest_error", "media_sequence_reused", True)]


def test_a_segment_token_that_changes_between_reloads_is_no_reused_media_sequence() -> None:
    tokened = [(6.0 * k, media(k).replace(".ts", f".ts?token=t{k}")) for k in range(4)]
    assert single(*tokened) == []


def test_a_discontinuity_sequence_that_forgets_a_tag_that_left_is_a_manifest_error() -> None:
    tagged = frozenset({2})
    reloads = [
        (0.0, media(0, disc=tagged)),
        (6.0, media(1, disc=tagged)),
        (12.0, media(2, disc=tagged)),
        (18.0, media(3, disc=tagged)),
    ]  # segment 2 left: the sequence should now be 1, is 0
    found = single(*reloads)
    assert rules(found) == [("manifest_error", "discontinuity_sequence", True)]
    assert (found[0].metrics["expected"], found[0].metrics["found"]) == (1.0, 0.0)


@pytest.mark.parametrize("drop_tag_early", [False, True])
def test_a_discontinuity_sequence_that_counts_the_tags_that_left_raises_nothing(drop_tag_early: bool) -> None:
    # RFC 8216 6.2.2, either way a server does it: the tag stays before the first segment until
    # that segment leaves, or goes with the segment before it (and the sequence counts it then).
    second = media(2, dseq=1) if drop_tag_early else media(2, disc=frozenset({2}))
    reloads = [
        (0.0, media(0, disc=frozenset({2}))),
        (6.0, media(1, disc=frozenset({2}))),
        (12.0, second),
        (18.0, media(3, dseq=1)),
    ]
    assert single(*reloads) == []


def test_an_extinf_rounding_above_the_target_is_open_while_in_the_window() -> None:
    long = {5: 7.2}
    reloads = [(6.0 * k, media(k, durations=long)) for k in range(8)]
    found = single(*reloads)
    assert rules(found) == [
        ("manifest_error", "extinf_exceeds_target", False),
        ("manifest_error", "extinf_exceeds_target", True),
    ]
    assert found[0].metrics["extinf_s"] == 7.2 and found[0].metrics["media_sequence"] == 5.0
    assert (found[1].start_s, found[1].end_s) == (12.0, 36.0)  # in the window from msn 2 to 5


def test_an_extinf_that_rounds_to_the_target_is_no_error() -> None:
    assert single((0.0, media(0, durations={1: 6.49}))) == []


def test_a_live_window_under_three_targets_after_segments_left_is_a_manifest_error() -> None:
    found = single((0.0, media(0, count=2)), (6.0, media(1, count=2)))
    assert rules(found) == [("manifest_error", "live_window_short", False)]
    assert found[0].metrics["window_s"] == 12.0


def test_a_live_playlist_still_growing_from_its_first_segment_is_not_short() -> None:
    assert single((0.0, media(0, count=1)), (6.0, media(0, count=2)), (12.0, media(0, count=3))) == []


def test_two_failed_reloads_in_a_row_make_the_playlist_unavailable() -> None:
    h = LadderHealth()
    h.single(BASE + "hi.m3u8")
    assert h.unavailable(BASE + "hi.m3u8", 503, "HTTP 503", 1.0) == []
    found = h.unavailable(BASE + "hi.m3u8", 503, "HTTP 503", 2.0)
    assert rules(found) == [("manifest_error", "playlist_unavailable", False)]
    assert found[0].metrics["status"] == 503.0
    assert rules(h.media(BASE + "hi.m3u8", pl(media(0)), 3.0)) == [
        ("manifest_error", "playlist_unavailable", True)
    ]


def test_a_failed_segment_is_a_segment_error_until_the_next_good_one() -> None:
    h = LadderHealth()
    h.single(BASE + "hi.m3u8")
    h.media(BASE + "hi.m3u8", pl(media(0)), 0.0)
    opened = h.segment(BASE + "hi.m3u8", 3, BASE + "seg3.ts?token=secret", 404, "HTTP 404", 1.0)
    closed = h.segment(BASE + "hi.m3u8", 4, BASE + "seg4.ts", 206, None, 7.0)
    assert [(f.type, f.end_s) for f in opened + closed] == [("segment_error", None), ("segment_error", 7.0)]
    assert opened[0].metrics["status"] == 404.0 and opened[0].labels["uri"] == BASE + "seg3.ts"  # no query


def test_the_segments_to_check_are_the_newest_first_then_each_new_one() -> None:
    h = LadderHealth()
    uri = BASE + "hi.m3u8"
    h.single(uri)
    h.media(uri, pl(media(0)), 0.0)
    assert [msn for msn, _ in h.to_check(uri)] == [3]
    h.media(uri, pl(media(2)), 12.0)
    assert [msn for msn, _ in h.to_check(uri)] == [4, 5]
    assert h.to_check(uri) == []


# ------------------------------------------------------------ a ladder


def ladder(now: float, texts: dict[str, str], health: LadderHealth, master: str = MASTER) -> list[Finding]:
    parsed = parse(master, BASE + "master.m3u8").master
    assert isinstance(parsed, MasterPlaylist)
    out = health.master(parsed, now)
    for name, text in texts.items():
        out += health.media(BASE + name, parse(text, BASE + name).media or pl(text), now)
    return out + health.tick(now)


def test_a_ladder_in_step_raises_nothing() -> None:
    h = LadderHealth()
    found: list[Finding] = []
    for k in range(6):
        found += ladder(
            6.0 * k, {"hi.m3u8": media(k), "lo.m3u8": media(k, name="lo"), "audio.m3u8": media(k)}, h
        )
    assert found == []


def test_the_decoded_variant_gone_from_the_master_is_a_manifest_error_until_it_is_back() -> None:
    h = LadderHealth()
    ladder(0.0, {}, h)
    without = MASTER.replace(
        '#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360,AUDIO="aac"\nhi.m3u8\n', ""
    )
    gone = ladder(6.0, {}, h, without)
    back = ladder(12.0, {}, h)
    assert rules(gone + back) == [
        ("manifest_error", "variant_missing", False),
        ("manifest_error", "variant_missing", True),
    ]


def test_a_variant_token_that_changes_between_reloads_keeps_the_rendition_and_its_state() -> None:
    h = LadderHealth()
    found: list[Finding] = []
    for k in range(8):
        master = MASTER.replace("hi.m3u8", f"hi.m3u8?token=t{k}").replace("lo.m3u8", f"lo.m3u8?token=t{k}")
        found += ladder(
            6.0 * k, {f"hi.m3u8?token=t{k}": media(min(k, 2)), f"lo.m3u8?token=t{k}": media(k)}, h, master
        )
    assert len(h.renditions) == 3
    assert [(f.type, f.key, f.end_s) for f in found] == [("manifest_stale", "v0", None)]  # hi stopped at 2


def test_renditions_whose_media_sequences_drift_apart_are_a_rendition_mismatch() -> None:
    h = LadderHealth()
    found: list[Finding] = []
    for k in range(4):
        found += ladder(6.0 * k, {"hi.m3u8": media(k + 10), "lo.m3u8": media(k, name="lo")}, h)
    assert [(f.type, f.key, f.labels["what"]) for f in found] == [
        ("rendition_mismatch", "v1-media_sequence", "media_sequence")
    ]
    assert found[0].metrics["difference"] == -10.0


def test_renditions_whose_program_date_times_disagree_are_a_rendition_mismatch() -> None:
    h = LadderHealth()
    found = ladder(
        0.0,
        {
            "hi.m3u8": media(0, pdt0="2030-01-01T00:00:00Z"),
            "lo.m3u8": media(0, name="lo", pdt0="2030-01-01T00:00:02.500Z"),
        },
        h,
    )
    assert [(f.type, f.labels["what"], f.metrics["offset_s"]) for f in found] == [
        ("rendition_mismatch", "program_date_time", 2.5)
    ]


def test_renditions_whose_discontinuity_numbers_differ_are_a_rendition_mismatch() -> None:
    h = LadderHealth()
    found = ladder(0.0, {"hi.m3u8": media(0, dseq=1), "lo.m3u8": media(0, name="lo")}, h)
    assert [(f.type, f.labels["what"]) for f in found] == [("rendition_mismatch", "discontinuity_sequence")]


def test_a_stalled_rendition_is_stale_not_a_mismatch() -> None:
    h = LadderHealth()
    found: list[Finding] = []
    for k in range(8):
        found += ladder(6.0 * k, {"hi.m3u8": media(k), "lo.m3u8": media(min(k, 2), name="lo")}, h)
    assert [(f.type, f.key) for f in found] == [("manifest_stale", "v1")]


# ------------------------------------------------------------ cues


def test_cue_tags_and_scte35_dateranges_are_read_once_each() -> None:
    out = tscue.splice_info_section(5, tscue.splice_insert(77, out=True, pts=900_000, duration=2_700_000))
    tags = {
        1: ["#EXT-X-CUE-OUT:DURATION=30"],
        2: [
            f'#EXT-X-DATERANGE:ID="ad-77",START-DATE="2030-01-01T00:00:12Z",PLANNED-DURATION=30,SCTE35-OUT=0x{out.hex()}'
        ],
        3: ["#EXT-X-CUE-IN"],
    }
    cues = PlaylistCues()
    first = cues.read(pl(media(0, pdt0="2030-01-01T00:00:00Z", extra=tags)), 100.0)
    again = cues.read(pl(media(1, pdt0="2030-01-01T00:00:06Z", extra=tags)), 106.0)
    assert again == []
    got = [(c.pid, c.command, c.kind, c.event_id, c.duration_s, c.splice_s) for c in first]
    t0 = 1893456000.0  # 2030-01-01T00:00:00Z
    assert got == [
        (-1, "EXT-X-CUE-OUT", "out", None, 30.0, t0 + 6),
        (-1, "splice_insert", "out", 77, 30.0, t0 + 12),
        (-1, "EXT-X-CUE-IN", "in", None, None, t0 + 18),
    ]
    assert all(c.arrival_s == 100.0 for c in first)


def test_a_cue_out_carrying_a_base64_section_is_decoded() -> None:
    section = tscue.splice_info_section(5, tscue.splice_insert(9, out=True, pts=None, duration=900_000))
    tag = f'#EXT-X-CUE-OUT:DURATION=10,CUE="{base64.b64encode(section).decode()}"'
    (cue,) = PlaylistCues().read(pl(media(0, extra={2: [tag]})), 50.0)
    assert (cue.command, cue.kind, cue.event_id, cue.duration_s) == ("splice_insert", "out", 9, 10.0)
    assert cue.splice_s == 50.0 - 12.0  # no date-time: two segments before the live edge
