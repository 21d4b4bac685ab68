"""The session's audio path: decoded audio of any format to the detectors' 48 kHz planar float."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from shared.models import Defect
from tests.media import make_testsrc
from worker.decoded import ANALYSIS_RATE, AudioConverter
from worker.session import Outcome, analyze


def frame(samples: npt.NDArray[np.float32], rate: int, layout: str) -> av.AudioFrame:
    """A decoded-audio frame: (channels, n) planar float."""
    audio = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
    audio.sample_rate = rate
    return audio


def tone(channels: int, n: int, rate: int, start: int = 0) -> npt.NDArray[np.float32]:
    t = (np.arange(n) + start) / rate
    return np.tile(0.5 * np.sin(2 * np.pi * 440.0 * t), (channels, 1)).astype(np.float32)


def converted(converter: AudioConverter, frames: list[av.AudioFrame]) -> npt.NDArray[np.float32]:
    return np.concatenate([out for f in frames for out in converter.convert(f)], axis=1)


def test_audio_already_in_the_analysis_format_comes_out_unchanged() -> None:
    samples = tone(2, 1024, ANALYSIS_RATE)
    [out] = list(AudioConverter(2).convert(frame(samples, ANALYSIS_RATE, "stereo")))
    assert out.dtype == np.float32 and out.shape == (2, 1024)
    np.testing.assert_array_equal(out, samples)


def test_audio_at_another_rate_is_resampled_to_48_khz() -> None:
    frames = [frame(tone(2, 1000, 44_100, 1000 * k), 44_100, "stereo") for k in range(44)]
    out = converted(AudioConverter(2), frames)
    assert out.shape[0] == 2
    assert out.shape[1] == pytest.approx(44_000 * ANALYSIS_RATE / 44_100, abs=64)  # less its delay


def test_a_change_of_rate_and_layout_mid_stream_is_converted_not_refused() -> None:
    # PyAV's resampler refuses a frame unlike its first: a 5.1 advert in a stereo programme, or
    # 44.1 kHz after a splice, must not end the stream's monitoring.
    converter = AudioConverter(2)
    before = converted(converter, [frame(tone(2, 1024, 44_100), 44_100, "stereo")])
    after = converted(converter, [frame(tone(6, 1024, ANALYSIS_RATE), ANALYSIS_RATE, "5.1")])
    assert before.shape[0] == after.shape[0] == 2
    assert after.shape[1] == 1024


def test_audio_timing_holds_across_a_sample_rate_change_in_the_stream(tmp_path: Path) -> None:
    # A transport stream whose audio goes from 48 kHz stereo to 44.1 kHz mono, as two encoders'
    # outputs spliced together; the second part carries 3 s of silence from its 1 s mark.
    first, second = tmp_path / "first.ts", tmp_path / "second.ts"
    make_testsrc(first, duration_s=4.0, seed=1, width=320, height=180)
    make_testsrc(
        second,
        duration_s=5.0,
        seed=2,
        width=320,
        height=180,
        sample_rate=44_100,
        channels=1,
        script="silence@1+3",
    )
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(first.read_bytes() + second.read_bytes())
    records: list[Defect] = []
    assert analyze(str(spliced), records.append) == (Outcome.COMPLETED, None)
    [silence] = [d for d in records if d.type == "silence" and d.end_s is not None]
    # Its timestamps start again at 0: measured on them, at 44.1 kHz, not as 48 kHz samples.
    assert (silence.start_s, silence.end_s) == (pytest.approx(1.0, abs=0.05), pytest.approx(4.0, abs=0.05))
