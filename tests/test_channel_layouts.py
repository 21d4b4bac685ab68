"""Audio blocks carry the layout's channel names from the decoder to the detectors."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from shared.models import Defect
from tests.media import cached_path, surround_5_1_ac3
from worker.decoded import AudioBatcher, AudioConverter
from worker.detectors.base import AudioBlock, channel_names
from worker.session import analyze


def test_converter_names_the_channels_of_an_ac3_5_1_stream(tmp_path: Path) -> None:
    clip = tmp_path / "surround.ac3"
    surround_5_1_ac3(clip, 1.0, {})
    converter = AudioConverter(6)
    with av.open(str(clip)) as container:
        frame = next(container.decode(audio=0))
        [samples] = list(converter.convert(frame))
    assert samples.shape[0] == 6
    assert converter.names == ("FL", "FR", "FC", "LFE", "SL", "SR")


def test_converter_names_a_stereo_downmix() -> None:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    frame.sample_rate = 48_000
    converter = AudioConverter(2)
    list(converter.convert(frame))
    assert converter.names == ("FL", "FR")


def test_batcher_blocks_carry_the_names_and_a_new_layout_starts_a_block() -> None:
    batcher = AudioBatcher(min_samples=4096)
    side = ("FL", "FR", "FC", "LFE", "SL", "SR")
    back = ("FL", "FR", "FC", "LFE", "BL", "BR")
    assert batcher.add(0.0, np.zeros((6, 1024), np.float32), side) == []
    [block] = batcher.add(1024 / 48_000, np.zeros((6, 1024), np.float32), back)
    assert block.channels == side
    pending = batcher.drain()
    assert pending is not None and pending.channels == back


def test_unnamed_channels_take_ffmpegs_default_layout_for_their_count() -> None:
    block = AudioBlock(t=0.0, samples=np.zeros((6, 10), np.float32), rate=48_000)
    assert block.names == ("FL", "FR", "FC", "LFE", "BL", "BR")
    assert channel_names(2) == ("FL", "FR")
    assert channel_names(11) == tuple(f"ch{c}" for c in range(11))
    assert channel_names(2, ("FC",)) == ("FL", "FR")  # names that do not fit the count are ignored


def test_the_session_reports_a_lost_centre_channel_by_its_name() -> None:
    clip = cached_path("dialogue_lost.ac3", surround_5_1_ac3, 16.0, {"FC": (3.0, 13.0)})
    records: dict[str, Defect] = {}
    analyze(str(clip), lambda d: records.__setitem__(d.defect_id, d))
    [silence] = [d for d in records.values() if d.type == "silence"]
    assert silence.defect_id.endswith("-silence-FC")
    assert silence.end_s is not None and abs(silence.end_s - silence.start_s - 10.0) < 0.1
