"""A/V offset from programme content, without marks: the method, and its streaming windows.

What others do, and what we do differently:

* **SyncNet** (Chung & Zisserman, 2016) embeds 0.2 s of MFCCs and five frames of a mouth crop
  with two trained CNNs and takes the offset (within ±15 frames) where their distance is
  smallest; its confidence is the median distance minus the minimum. It needs a face, model
  weights and a GPU-class budget per frame.
* **Synchformer** (Iashin et al., 2024) classifies the offset of in-the-wild clips (sparse cues:
  a ball, a door) with a transformer over segment features from contrastively pre-trained
  audio and visual encoders, in 0.2 s classes over ±2 s, and predicts *synchronisability*
  (whether a clip can be synchronised at all). Weights again, and 0.2 s steps: coarser than
  BT.1359's window.
* **audio-offset-finder** (BBC) finds one audio file inside another by cross-correlating
  standardised MFCCs, and reports the peak's *standard score* (above about 10: likely right,
  below 5: unlikely). Audio against audio only.
* **Broadcast lip-sync monitors** mostly avoid content analysis: they follow test marks
  (flash and beep, as our marks path does), watermarks, or SMPTE ST 2064 audio/video
  fingerprints taken at a reference point and compared downstream, which needs the reference.
  Some file QC tools add face-and-mouth models for talking heads.

We need no weights, no reference and no face: an *audio onset strength* (the rectified rise of
log band energies on 20 ms frames every 5 ms, summed over bands: knocks, cuts of sound, speech
syllables) is correlated with a *visual onset strength* (the rectified rise of motion energy,
the mean absolute luma difference between pictures, in the cells of a coarse grid over a
downscaled luma, summed over cells: a flash, a hit that starts motion, a cut). Per ``window_s``
window (hopping) the Pearson correlation is taken at every lag on the audio's 5 ms grid over
±``max_lag_s`` (BT.1359's ±1 s); the offset is the centroid of the peak above half its height
(a sharp peak's vertex within a millisecond; the middle of the plateau a drift spreads over the
lags). Visual onsets are dated on their picture, so whatever a frame cannot resolve (an event
between two pictures) is at most a frame of error. Like audio-offset-finder
(and unlike SyncNet's embedding distance) the result carries its own evidence: the peak's
*prominence* (robust standard score against the correlation away from it) and its *margin*
over the second-best peak. Content that gives too little (silence, a static picture, audio
unrelated to the picture, a regular beat whose period aliases the lag) is *unknown*, as
Synchformer's synchronisability would say, and unknown is never "in sync".

A second audio track (a dubbed language) is compared with the first the same way, audio onsets
against audio onsets: :func:`worker.sync.correlation.estimate_track`.

Costs (measured in ``bench.accuracy_sync``: 2.5 % of 720p25 decoding): per picture a strided
luma sample, one absolute difference, OpenCV's cell means and a few 48-element operations; per
audio block a decimation and one batched real FFT; per hop one correlation, the cross term on
the pictures that have an onset only. Not done: speech gating, and a face or mouth region
(OpenCV's cascades cost milliseconds a picture); a large mouth moves its own cells anyway.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from worker.sync.audio_onsets import AudioOnsetTrack
from worker.sync.correlation import Thresholds, WindowEstimate, estimate_window
from worker.sync.video_onsets import (
    GRID,
    REFERENCE_PICTURES,
    cell_motion,
    log_motion,
    luma_sample,
    visual_onset,
)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


class ContentSync:
    """Onsets of one stream and its hopping windows: feed pictures and audio in order, then
    take the windows that both timelines have passed from :meth:`ready`.

    A window ends every ``hop_s`` of video time from ``window_s`` after the first picture and
    covers the ``window_s`` before its end; it is evaluated once the audio has reached its end
    plus ``max_lag_s`` (a late sound must have arrived). Time going back or jumping by more than
    ``max_gap_s`` starts the pictures' history afresh."""

    def __init__(
        self,
        window_s: float,
        hop_s: float,
        max_lag_s: float,
        thresholds: Thresholds | None = None,
        max_gap_s: float = 1.0,
    ) -> None:
        self.window_s = window_s
        self.hop_s = hop_s
        self.max_lag_s = max_lag_s
        self.thresholds = thresholds or Thresholds()
        self.max_gap_s = max_gap_s
        self.audio = AudioOnsetTrack(keep_s=window_s + 2.0 * max_lag_s + hop_s + 1.0)
        self._times: list[float] = []
        self._values: list[float] = []
        self._sample: U8 | None = None
        rows, cols = GRID
        self._logs = np.zeros((REFERENCE_PICTURES, rows * cols), np.float32)  # ring of log motion
        self._filled = 0  # pictures in the ring
        self._next_end: float | None = None

    def reset_video(self) -> None:
        self._times, self._values = [], []
        self._sample = None
        self._filled = 0
        self._next_end = None

    def feed_video(self, t: float, luma: U8) -> None:
        if self._times and not 0.0 < t - self._times[-1] <= self.max_gap_s:
            self.reset_video()
        sample = luma_sample(luma)
        value = 0.0
        if self._sample is not None and self._sample.shape == sample.shape:
            logs = log_motion(cell_motion(sample, self._sample))
            if self._filled >= REFERENCE_PICTURES:
                value = visual_onset(logs, self._logs.max(axis=0))
            self._logs[self._filled % REFERENCE_PICTURES] = logs
            self._filled += 1
        else:
            self._filled = 0
        self._sample = sample
        self._times.append(t)
        self._values.append(value)
        if self._next_end is None:
            self._next_end = t + self.window_s

    def feed_audio(self, t: float, samples: F32, rate: int) -> None:
        self.audio.feed(t, samples, rate)

    def ready(self, skip: bool = False) -> list[WindowEstimate]:
        """The windows that can now be evaluated, in order (``skip``: pass them by unevaluated,
        while another measurement has priority)."""
        found: list[WindowEstimate] = []
        while (
            self._next_end is not None
            and self._times
            and self._times[-1] >= self._next_end
            and self.audio.end >= self._next_end + self.max_lag_s
        ):
            end = self._next_end
            self._next_end = end + self.hop_s
            if not skip:
                found.append(self._evaluate(end - self.window_s, end))
        # Pictures no later window needs.
        if self._next_end is not None and self._times:
            keep_from = self._next_end - self.window_s - 1.0
            drop = 0
            while drop < len(self._times) and self._times[drop] < keep_from:
                drop += 1
            if drop > 256:
                del self._times[:drop], self._values[:drop]
        return found

    def _evaluate(self, start: float, end: float) -> WindowEstimate:
        times = np.array(self._times)
        chosen = (times >= start) & (times < end)
        video_t = times[chosen]
        video_v = np.array(self._values)[chosen]
        audio_t0, audio_v = self.audio.span(start - self.max_lag_s, end + self.max_lag_s)
        return estimate_window(
            video_t, video_v, audio_t0, audio_v, self.max_lag_s, self.thresholds, start, end
        )
