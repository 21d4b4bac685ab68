"""Each transport fault, injected into real encoded MPEG-TS, raises exactly its TR 101 290
indicator, at the right time, fed as a file and as 1316-byte datagrams; the clean streams raise
none (and a packet repeated once is no error).

Three independent sources: FFmpeg's CLI (libx264 + AAC at a constant ``-muxrate``, with its null
packets and PCR-only packets; libx264 + MP2 without, VBR) and ``avmon testsrc`` (PyAV's muxer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avmon import tsfault
from avmon.tsfault import FAULTS, inject, parse_faults
from tests.media import transport_sources
from tests.support import needs_ffmpeg
from tests.transport_media import analyse
from worker.detectors.base import Severity
from worker.transport import RULES

pytestmark = needs_ffmpeg


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return transport_sources()


# Where each indicator must start, after the fault: the standard's limit on the gap it makes.
GAP_LIMIT_S = {"pat": 0.5, "pmt": 0.5, "pid": 5.0, "pcr": 0.1, "pts": 0.7}
SCRIPTS = {
    "drop": "drop@3",
    "duplicate": "duplicate@3",
    "duplicate2": "duplicate2@3",
    "sync": "sync@3",
    "garbage": "garbage@3",
    "tei": "tei@3",
    "pat": "pat@3+1",
    "pmt": "pmt@3+1",
    "pmt_crc": "pmt_crc@3",
    "pid": "pid@3+6",
    "pcr": "pcr@3+0.15",
    "pcr_jump": "pcr_jump@3",
    "pts": "pts@3+1.5",
}
START_TOLERANCE_S = 0.2  # DESIGN.md §9: start error ≤ 0.2 s


def test_every_fault_kind_has_a_test() -> None:
    assert set(SCRIPTS) == set(FAULTS)


@pytest.mark.parametrize("mode", ["file", "datagrams"])
@pytest.mark.parametrize("source", ["cbr", "vbr", "testsrc"])
def test_clean_stream_raises_nothing(sources: dict[str, bytes], source: str, mode: str) -> None:
    assert analyse(inject(sources[source], []), mode) == []


@pytest.mark.parametrize("mode", ["file", "datagrams"])
@pytest.mark.parametrize("source", ["cbr", "vbr", "testsrc"])
@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_fault_raises_exactly_its_indicator_once(
    sources: dict[str, bytes], source: str, mode: str, kind: str
) -> None:
    inj = inject(sources[source], parse_faults(SCRIPTS[kind]))
    (truth,) = inj.truth
    found = analyse(inj, mode)
    opened = [f for f in found if f.end_s is None]
    closed = [f for f in found if f.end_s is not None]
    if truth.type is None:  # a single duplicate is allowed (ISO/IEC 13818-1 §2.4.3.3)
        assert found == []
        return
    assert [f.type for f in opened] == [truth.type]
    assert [f.type for f in closed] == [truth.type]
    (f,) = closed
    limit = GAP_LIMIT_S.get(kind, 0.0)
    assert f.start_s == pytest.approx(truth.pcr_start_s + limit, abs=START_TOLERANCE_S)
    assert f.end_s == pytest.approx(truth.pcr_end_s, abs=START_TOLERANCE_S)
    assert f.start_s == opened[0].start_s  # one defect: the close pairs with the open
    assert f.metrics["count"] == 1
    assert f.severity == (Severity.CRITICAL if RULES[truth.type].priority == 1 else Severity.WARNING)
    if truth.pid is not None and kind != "pat":
        assert f.metrics["pid"] == truth.pid
        assert f.key == f"pid{truth.pid}"


def test_tsfault_writes_the_stream_and_its_ground_truth(sources: dict[str, bytes], tmp_path: Path) -> None:
    src = tmp_path / "in.ts"
    src.write_bytes(sources["vbr"])
    assert tsfault.main([str(src), str(tmp_path / "out.ts"), "--faults", "drop@2, pid@3+6"]) == 0
    truth = json.loads((tmp_path / "out.ts.truth.json").read_text())
    assert [(f["kind"], f["type"]) for f in truth["faults"]] == [
        ("drop", "continuity_count_error"), ("pid", "pid_error")
    ]
    assert (tmp_path / "out.ts").stat().st_size == len(sources["vbr"]) - 188


@pytest.mark.parametrize("script", ["drop", "pat@3", "drop@3+1", "nosuch@3", "pid@3+6:bytes=5"])
def test_tsfault_refuses_a_bad_script_with_the_reason(script: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        parse_faults(script)
