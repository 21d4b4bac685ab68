"""MPD parsing and segment addressing (worker/dash/mpd.py) on small MPD texts, and the choice of
representations within the worker's limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.dash.mpd import ManifestInvalid, Mpd, parse_duration, parse_mpd
from worker.dash.source import choose
from worker.media import Limits, SourceRefused

NOW = 1_800_000_000.0  # epoch s: the clock the tests' MPDs are read at
MPD_NS = 'xmlns="urn:mpeg:dash:schema:mpd:2011"'

STATIC_NUMBER = f"""<?xml version="1.0"?>
<MPD {MPD_NS} type="static" mediaPresentationDuration="PT6S">
  <BaseURL>https://cdn.example/vod/</BaseURL>
  <Period start="PT0S">
    <BaseURL>p1/</BaseURL>
    <AdaptationSet contentType="video" width="640" height="360" frameRate="25">
      <SegmentTemplate timescale="12800" initialization="init-$RepresentationID$.m4s"
                       media="chunk-$RepresentationID$-$Number%05d$.m4s" startNumber="3">
        <SegmentTimeline><S t="12800" d="25600" r="1"/><S d="12800"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="v1" bandwidth="800000"/>
    </AdaptationSet>
  </Period>
</MPD>"""


def _parse(text: str, url: str = "https://cdn.example/vod/manifest.mpd") -> Mpd:
    return parse_mpd(text.encode(), url, NOW)


def test_static_number_template_with_timeline_lists_each_segment_with_its_time_and_url() -> None:
    mpd = _parse(STATIC_NUMBER)
    (rep,) = mpd.representations
    assert not mpd.dynamic and mpd.duration_s == 6.0
    assert rep.kind == "video" and (rep.width, rep.height, rep.frame_rate) == (640, 360, 25.0)
    assert rep.init_url == "https://cdn.example/vod/p1/init-v1.m4s"
    segs = mpd.segments(rep, NOW)
    assert [(s.number, s.start_s, s.end_s) for s in segs] == [(3, 1.0, 3.0), (4, 3.0, 5.0), (5, 5.0, 6.0)]
    assert segs[0].url == "https://cdn.example/vod/p1/chunk-v1-00003.m4s"


def test_dynamic_time_template_with_timeline_addresses_segments_by_their_start_time() -> None:
    mpd = _parse(
        f"""<MPD {MPD_NS} type="dynamic" availabilityStartTime="2027-01-15T08:00:00Z"
             publishTime="2027-01-15T08:00:20Z" minimumUpdatePeriod="PT2S"
             suggestedPresentationDelay="PT4S" timeShiftBufferDepth="PT30S">
          <Period id="a" start="PT0S">
            <AdaptationSet mimeType="audio/mp4">
              <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
                                         value="2"/>
              <Representation id="a1" bandwidth="128000" audioSamplingRate="48000">
                <SegmentTemplate timescale="48000" media="audio/$Bandwidth$/$Time$.m4s" initialization="a.mp4"
                                 presentationTimeOffset="96000">
                  <SegmentTimeline><S t="960000" d="96000" r="2"/></SegmentTimeline>
                </SegmentTemplate>
              </Representation>
            </AdaptationSet>
          </Period>
        </MPD>""",
        url="http://origin.example/live/channel.mpd",
    )
    (rep,) = mpd.representations
    assert mpd.dynamic and mpd.minimum_update_period_s == 2.0 and mpd.suggested_presentation_delay_s == 4.0
    assert mpd.availability_start == NOW  # 2027-01-15T08:00:00Z
    assert (rep.kind, rep.channels, rep.sample_rate) == ("audio", 2, 48000)
    urls = [s.url for s in mpd.segments(rep, NOW)]
    assert urls == [f"http://origin.example/live/audio/128000/{t}.m4s" for t in (960000, 1056000, 1152000)]
    # On the MPD's timeline a segment starts at its time less presentationTimeOffset.
    assert rep.presentation_s(960000) == pytest.approx(18.0)


def test_dynamic_number_template_with_duration_lists_what_the_time_shift_window_holds() -> None:
    ast = NOW - 10.5  # 10.5 s of presentation so far: five 2 s segments have ended
    mpd = _parse(
        f"""<MPD {MPD_NS} type="dynamic" availabilityStartTime="{_iso(ast)}" timeShiftBufferDepth="PT6S">
          <Period start="PT0S"><AdaptationSet contentType="video">
            <Representation id="hd" bandwidth="3000000" width="1280" height="720">
              <SegmentTemplate timescale="1000" duration="2000" startNumber="100"
                               media="$RepresentationID$/$Number$.m4s"
                               initialization="$RepresentationID$/i.mp4"/>
            </Representation></AdaptationSet></Period></MPD>"""
    )
    (rep,) = mpd.representations
    segs = mpd.segments(rep, NOW)
    assert [(s.number, s.start_s) for s in segs] == [(102, 4.0), (103, 6.0), (104, 8.0)]
    assert segs[-1].url == "https://cdn.example/vod/hd/104.m4s"


def test_an_open_repeat_in_a_live_timeline_lists_the_segments_ended_by_now() -> None:
    mpd = _parse(
        f"""<MPD {MPD_NS} type="dynamic" availabilityStartTime="{_iso(NOW - 7.5)}">
          <Period start="PT0S"><AdaptationSet contentType="video"><Representation id="v" bandwidth="1">
            <SegmentTemplate timescale="1000" media="$Time$.m4s">
              <SegmentTimeline><S t="0" d="2000" r="-1"/></SegmentTimeline>
            </SegmentTemplate></Representation></AdaptationSet></Period></MPD>"""
    )
    (rep,) = mpd.representations
    # 7.5 s in: three 2 s segments have ended; the fourth (6-8 s) is not available yet.
    assert [s.url.rsplit("/", 1)[1] for s in mpd.segments(rep, NOW)] == ["0.m4s", "2000.m4s", "4000.m4s"]


def test_segment_list_and_dollar_escapes_resolve_against_the_representation_base_url() -> None:
    mpd = _parse(
        f"""<MPD {MPD_NS} type="static" mediaPresentationDuration="PT4S"><Period>
          <AdaptationSet contentType="video"><Representation id="r" bandwidth="1">
            <BaseURL>http://other.example/r/</BaseURL>
            <SegmentList timescale="10" duration="20">
              <Initialization sourceURL="init.mp4"/>
              <SegmentURL media="s1.m4s"/><SegmentURL media="s2.m4s"/>
            </SegmentList></Representation></AdaptationSet>
          <AdaptationSet contentType="audio"><Representation id="x" bandwidth="2">
            <SegmentTemplate media="a$$$Number$.m4s" duration="2"/></Representation></AdaptationSet>
        </Period></MPD>"""
    )
    video, audio = mpd.representations
    assert video.init_url == "http://other.example/r/init.mp4"
    assert [(s.url, s.start_s) for s in mpd.segments(video, NOW)] == [
        ("http://other.example/r/s1.m4s", 0.0),
        ("http://other.example/r/s2.m4s", 2.0),
    ]
    assert [s.url.rsplit("/", 1)[1] for s in mpd.segments(audio, NOW)] == ["a$1.m4s", "a$2.m4s"]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("not xml at all", "xml"),
        ("<MPD/>", "xml"),  # no DASH namespace
        (f'<MPD {MPD_NS} type="dynamic"><Period/></MPD>', "attribute"),  # no availabilityStartTime
        (
            f"""<MPD {MPD_NS}><Period><AdaptationSet><Representation id="v"><SegmentTemplate media="$Number$">
            <SegmentTimeline><S t="100" d="10"/><S t="50" d="10"/></SegmentTimeline>
            </SegmentTemplate></Representation></AdaptationSet></Period></MPD>""",
            "timeline",
        ),
        (
            f"""<MPD {MPD_NS}><Period><AdaptationSet><Representation id="v"><SegmentTemplate media="$Number$">
            <SegmentTimeline><S d="1" r="1000000000"/></SegmentTimeline>
            </SegmentTemplate></Representation></AdaptationSet></Period></MPD>""",
            "limits",
        ),
        (
            f"""<MPD {MPD_NS}><Period><AdaptationSet><Representation id="v">
            <SegmentTemplate media="$Time$.m4s" duration="2"/>
            </Representation></AdaptationSet></Period></MPD>""",
            "template",
        ),
    ],
)
def test_an_unusable_mpd_is_refused_naming_the_rule_it_breaks(text: str, rule: str) -> None:
    with pytest.raises(ManifestInvalid) as refused:
        _parse(text)
    assert refused.value.rule == rule


def test_entities_are_not_expanded() -> None:
    text = f"""<?xml version="1.0"?><!DOCTYPE MPD [<!ENTITY leak SYSTEM "file:///etc/hostname">]>
    <MPD {MPD_NS} mediaPresentationDuration="PT2S"><BaseURL>http://h.example/&leak;/</BaseURL><Period>
    <AdaptationSet contentType="video"><Representation id="v" bandwidth="1">
    <SegmentTemplate media="$Number$.m4s" duration="2"/></Representation></AdaptationSet></Period></MPD>"""
    (rep,) = _parse(text).representations
    assert rep.base_url == "http://h.example/"  # the entity reference is dropped, never read


def test_iso_durations_in_seconds() -> None:
    assert parse_duration("PT1.5S") == 1.5
    assert parse_duration("P1DT2H3M4S") == 86_400 + 7_200 + 180 + 4
    with pytest.raises(ManifestInvalid):
        parse_duration("1.5")


def test_the_highest_bandwidth_within_the_limits_is_chosen_for_each_kind() -> None:
    mpd = _parse(
        f"""<MPD {MPD_NS} mediaPresentationDuration="PT2S"><Period>
          <AdaptationSet contentType="video">
            <SegmentTemplate media="$RepresentationID$-$Number$" duration="2"/>
            <Representation id="sd" bandwidth="1000" width="640" height="360"/>
            <Representation id="uhd" bandwidth="9000" width="3840" height="2160"/>
            <Representation id="hd" bandwidth="3000" width="1280" height="720"/></AdaptationSet>
          <AdaptationSet contentType="audio">
            <SegmentTemplate media="$RepresentationID$-$Number$" duration="2"/>
            <Representation id="lo" bandwidth="64"/><Representation id="hi" bandwidth="128"/></AdaptationSet>
        </Period></MPD>"""
    )
    chosen = choose(mpd, Limits(max_width=1920, max_height=1080))
    assert [rep.id for rep in chosen] == ["hd", "hi"]
    with pytest.raises(SourceRefused):
        choose(mpd, Limits(max_width=320, max_height=180))


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")
