"""Frozen picture detection: FFmpeg ``freezedetect``'s vocabulary, made robust to real streams.

freezedetect keeps a *reference* (the last picture that was not frozen) and calls a picture
frozen when its mean absolute difference to the reference, normalised to the code range (MAFD,
``sum |a - b| / pixels / 256``), is at most ``n`` (-60 dB = 0.001, a quarter of a luma code on
average). A freeze starts at the reference's time (the frozen picture's first appearance) and
ends at the first picture that differs. This detector keeps that vocabulary and those boundaries
but classifies every picture against two pictures, the *origin* (the frozen picture's first
appearance) and the *reference* (the latest picture accepted into the freeze):

* **identical** - MAFD to the reference at most ``n`` *and* at least ``identical`` of the 16x16
  macroblocks bit-identical to it. A codec reproduces a held picture by skipping macroblocks,
  which copies them exactly; noise, however faint, touches nearly every block. This is what
  keeps grain, sensor noise and dark noisy scenes live even when their MAFD is below ``n``.
* **re-encoded** - not identical, but differing from the origin only as a new encoding of the
  same picture would: MAFD to the origin at most ``refresh_n``, no macroblock whose mean (DC)
  moved by more than ``refresh_dc``, and the picture's overall mean within ``refresh_mean``
  (quantisation noise is zero-mean per block; a caption, a moved object or a new slide shifts
  some block's mean by tens of codes, a fade shifts the overall mean). A picture that is not a
  keyframe must also be within ``refine_n`` of the reference, unless it comes less than
  ``rekey_s`` after a keyframe accepted into the freeze.
* **different** - anything else: the freeze (if any) ends here.

Why re-encoded pictures must be accepted: inside a freeze every keyframe
(``VideoFrame.key_frame``) re-encodes the picture from scratch, so the difference spikes once
per GOP (-50 to -30 dB) and freezedetect splits or misses the freeze; and x264 also keeps
refining the held picture in P and B pictures, by much less (measured on ``avmon testsrc``
streams: a fifth of the pictures of a freeze, up to 11 in a row, -76 to -49 dB each). Hence
the two tolerances: keyframes loose, refinements tight (``refine_n``), so that grain the encoder
codes (typically -45 dB and more from picture to picture) stays live. Right after a keyframe an
encoder re-converges on the held picture, and may refine it by more than ``refine_n`` (FFmpeg's
MPEG-2 encoder at 3 Mbit/s, GOP 12: the first P picture after each I picture, -46 to -44 dB), so
pictures less than ``rekey_s`` after a keyframe of the freeze are judged loosely too; grain,
which changes all through the GOP, still breaks the run outside that window. A re-encoded picture
becomes the reference, but it only *tentatively* belongs to the freeze: if pictures keep
changing for more than ``settle_s`` without an identical one, the picture is live (faint noise
on a static card, a slow pan) and the freeze ended where those changes began; if a different
picture comes first, the freeze ended there, or at the unconfirmed keyframe before it.

Overlays: a channel logo, a burned-in clock or timecode, a ticker strip keep changing on a
frozen programme, and to a viewer the programme is frozen. The picture is judged by regions: a
``grid`` x ``grid`` grid on macroblock boundaries. When a picture is neither identical nor
re-encoded only because some regions changed (MAFD above ``n`` in each), and those regions with
the ones already set aside in this run cover at most ``overlay`` of the picture, they are set
aside as an *overlay*: from then on, until the run ends, they are ignored (copied from the
reference before every comparison) and the rest must be identical or re-encoded as above. So a
small moving area does not hold a freeze open, while changes anywhere else, or a moving area
that outgrows ``overlay`` (motion that matters: a person, a pan), do. The share of the picture
that is frozen (1 minus the overlay's share) is reported as ``frozen_share``. Regions are set
aside only while the rest is bit-identical, never on a keyframe, so a re-encoding's spread-out
differences cannot pass for an overlay. Cost: a picture that is not identical is first probed on
one row per macroblock (:func:`probe_macroblocks`); after a failed probe the next
``PROBE_REST`` (2) pictures are not, so a freeze under an overlay may start up to two pictures
late (80 ms at 25 fps).

Drift: every picture is compared with the reference, never only with the previous one, so
changes below ``n`` accumulate until the picture is no longer identical; re-encoded pictures are
judged against the origin, so drift cannot be laundered through them beyond the ``refresh_*``
tolerances either (a fade is stopped by ``refresh_mean``).

Limitation: grain that the encoder leaves almost entirely uncoded (very low bitrates: skipped
macroblocks, and changes below ``refine_n`` when it does code some) decodes as a held picture
that is being refined, and is reported as frozen; so is a static shot, which freezedetect
reports too.

Cross-modal judgement: a held *black* picture is the black detector's defect, not a freeze, and
is not reported here; what is black is what the black detector runs with, which it publishes in
``StreamContext.black_picture`` (by default blackdetect's: 98 % of pixels at most 10 % above black).
Severity is ``critical`` when the audio is silent too (``StreamContext.audio_silent_since``, set
by the silence detector, at least ``audio_silent_s`` old) or when the stream has no audio:
nothing of the programme is left. It is ``warning`` while the audio goes on (a frozen slide under
live narration). A close finding carries the worst severity seen during the freeze.

Only luma is analysed (freezedetect also sums chroma), every ``row_step``-th row, cropped to whole
macroblocks: at the default of 4, each macroblock is judged on 64 pixels, a quarter of its own,
which noise cannot leave all unchanged, and a 1280x720 picture's MAFD is a mean of 230,400
differences. The comparisons are bound by memory (the reference is no longer in cache), so the
cost falls with the rows read. Corrupt pictures are skipped (``decode_error`` reports them):
concealment output must neither end a freeze nor become a reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from shared.models import DefectType
from worker.detectors.base import Detector, Finding, Severity, StreamContext, VideoFrame
from worker.detectors.black import black_luma_threshold, black_pixel_fraction
from worker.detectors.options import DetectorOptions, opt
from worker.detectors.runs import RunTracker
from worker.picture_diff import (
    MACROBLOCK,
    BlockMeans,
    Luma,
    RegionGrid,
    block_means,
    db_to_ratio,
    dc_shifts,
    identical_block_fraction,
    macroblock_sample,
    mafd,
    mafd_bounded,
    probe_macroblocks,
    ratio_to_db,
)
from worker.picture_diff import cv_ready as _cv


@dataclass(frozen=True, slots=True)
class FreezeOptions(DetectorOptions):
    """Options of the ``freeze`` detector (``n`` and ``d`` as FFmpeg's ``freezedetect``).

    Re-encoding differences measured to the origin (MAFD, block DC): ``avmon testsrc`` (x264
    CRF 23) -38 dB, -39 dB; 640x360 full of fine texture at 400 kbit/s -29 dB, -34 dB, at
    200 kbit/s -25 dB, -34 dB (beyond ``refresh_n``: such a starved stream needs it raised).
    The defaults keep little margin on purpose: looser tolerances let slow changes of live
    pictures pass for longer.
    """

    n: float = opt(
        -60.0, "dB", "noise tolerance: max MAFD (mean |diff| / 256) of an identical picture to the "
        "reference; -60 dB is 0.256 codes", ge=-120.0, le=0.0,
    )
    d: float = opt(2.0, "s", "minimum duration of a freeze", ge=0.0)
    identical: float = opt(
        0.5, "fraction", "min share of macroblocks bit-identical to the reference in an identical "
        "picture (0 disables)", ge=0.0, le=1.0,
    )
    refine_n: float = opt(
        -46.0, "dB", "max MAFD of a re-encoded picture that is not a keyframe to the reference "
        "(-46 dB is 1.3 codes)", ge=-120.0, le=0.0,
    )
    refresh_n: float = opt(
        -30.0, "dB", "max MAFD of a re-encoded picture to the origin (-30 dB is 8.1 codes)", ge=-120.0, le=0.0
    )
    refresh_dc: float = opt(
        -34.0, "dB", "max shift of any macroblock's mean, / 256, of a re-encoded picture (-34 dB is "
        "5.1 codes)", ge=-120.0, le=0.0,
    )
    refresh_mean: float = opt(
        -46.0, "dB", "max shift of the picture's mean, / 256, of a re-encoded picture (-46 dB is "
        "1.3 codes)", ge=-120.0, le=0.0,
    )
    settle_s: float = opt(
        1.0, "s", "longest run of re-encoded pictures inside a freeze "
        "before the picture counts as live", ge=0.0
    )
    rekey_s: float = opt(
        0.1, "s", "pictures this soon after a keyframe accepted into a "
        "freeze are judged as loosely as it", ge=0.0
    )
    audio_silent_s: float = opt(1.0, "s", "audio silent this long makes a freeze critical", ge=0.0)
    row_step: int = opt(4, "rows", "analyse every n-th row (cost / n)", choices=(1, 2, 4, 8))
    grid: int = opt(
        16, "regions", "regions per side of the overlay grid (each at least one macroblock)", ge=1, le=64
    )
    overlay: float = opt(
        0.08, "fraction", "largest share of the picture that may keep changing on a frozen picture "
        "(0 disables)", ge=0.0, le=1.0,
    )


# Pictures not probed for an overlay after one that failed the probe: moving pictures fail it one
# after another, and the probe doubled the detector's cost on them (720p testsrc2: 1.5 % -> 3.0 %
# of decoding). A freeze under an overlay is then dated at most this many pictures late.
PROBE_REST = 2


class FreezeDetector(Detector):
    """Reports pictures held for at least ``d`` seconds (critical without audio, else warning)."""

    name: ClassVar[DefectType] = DefectType.FREEZE
    Options: ClassVar[type[FreezeOptions]] = FreezeOptions
    options: FreezeOptions

    def __init__(self, options: FreezeOptions | None = None, ctx: StreamContext | None = None) -> None:
        super().__init__(options, ctx)
        opts = self.options
        self._n = db_to_ratio(opts.n)
        self._refine_n = db_to_ratio(opts.refine_n)
        self._refresh_n = db_to_ratio(opts.refresh_n)
        self._refresh_dc = db_to_ratio(opts.refresh_dc)
        self._refresh_mean = db_to_ratio(opts.refresh_mean)
        self._block_rows = MACROBLOCK // opts.row_step
        # Pictures are kept as the views they were fed as, not copied: a view keeps its decoder
        # buffer alive and unchanged (FFmpeg never writes to a picture it has output), and a
        # copy of every new picture cost as much as comparing it (bench: 29 us at 720p).
        self._origin: Luma | None = None  # the frozen picture's first appearance
        self._diff_buf: Luma | None = None  # scratch for identical_block_fraction
        self._ref: Luma | None = None  # what the next picture is compared with
        self._origin_means: BlockMeans | None = None  # block_means of the origin, when needed
        self._run = RunTracker(opts.d)  # from the origin's t, s
        self._full_range = False  # of the origin
        self._identical = 0  # identical pictures since the origin
        self._changing_since: float | None = None  # t of the first of the latest re-encoded run
        self._unconfirmed_key: float | None = None  # t of the first keyframe in that run
        self._key_t: float | None = None  # t of the latest keyframe accepted into the freeze
        self._reencoded = 0
        self._black: bool | None = None  # whether the origin is a black picture, once needed
        self._max_mafd = 0.0  # largest MAFD of a picture accepted into the freeze
        self._pending_mafd = 0.0  # MAFD to the origin of the picture being judged re-encoded
        self._silent_audio = False  # the audio was silent at some point of this freeze
        self._last_t: float | None = None
        self._grid: RegionGrid | None = None  # for the current sample shape
        self._overlay: npt.NDArray[np.bool_] | None = None  # regions set aside in this run
        self._overlay_slices: list[tuple[slice, slice]] = []
        self._overlay_share = 0.0
        self._probe_buf: Luma | None = None  # scratch for probe_macroblocks
        self._probe_rest = 0  # pictures left before the next probe

    def feed_video(self, frame: VideoFrame) -> list[Finding]:
        if frame.corrupt:
            return []
        findings: list[Finding] = []
        t = frame.t
        if self._last_t is not None and t < self._last_t:
            # Time went backwards (a discontinuity): a freeze cannot extend across it.
            findings += self._end_run(self._last_t)
            self._ref = None
        self._last_t = t

        sample = macroblock_sample(frame.luma, self.options.row_step)
        if sample.size == 0:
            return findings
        ref = self._ref
        if ref is None or ref.shape != sample.shape:
            findings += self._end_run(t)
            self._new_run(sample, t, frame.full_range, frame.key_frame)
            return findings

        # Keyframes, and the pictures that re-converge right after one, are judged against the
        # origin; the others must also be within refine_n of the reference.
        loose = frame.key_frame or (self._key_t is not None and t - self._key_t < self.options.rekey_s)
        live = sample
        if self._overlay_slices:
            sample = self._mask_overlay(sample, ref)
        # Only whether the difference is within n (or refine_n, for a picture judged tightly)
        # matters beyond this point, unless it is.
        diff = mafd_bounded(sample, ref, self._n if loose else max(self._n, self._refine_n))
        identical = diff <= self._n and self._blocks_identical(sample, ref)
        if not identical and not frame.key_frame and self.options.overlay > 0.0:
            masked = self._grow_overlay(live, sample, ref)
            if masked is not None:
                sample, diff, identical = masked, mafd(masked, ref), True
        if identical:
            self._changing_since = self._unconfirmed_key = None
            self._identical += 1
            self._max_mafd = max(self._max_mafd, diff)
            self._silent_audio = self._silent_audio or self._audio_is_silent(t)
            if self._run.extend(t, lambda: not self._is_black()):
                findings.append(self._finding(self._start, None, t))
            return findings

        if (loose or diff <= self._refine_n) and self._reencoded_picture(sample):
            if self._changing_since is None:
                self._changing_since = t
            if frame.key_frame and self._unconfirmed_key is None:
                self._unconfirmed_key = t
            if t - self._changing_since <= self.options.settle_s:
                self._accept_reencoded(sample)
                if frame.key_frame:
                    self._key_t = t
                return findings
            # Changing for too long without ever holding still: live since the changes began.
            findings += self._end_run(self._changing_since)
        else:
            # Refinements are small, so the picture before this one was still the frozen one; a
            # keyframe is judged loosely, so if one came since the last identical picture, the
            # new content may well have begun there (the source resumed at a GOP boundary).
            end = self._unconfirmed_key
            findings += self._end_run(t if end is None else end)
        self._new_run(sample, t, frame.full_range, frame.key_frame)
        return findings

    def flush(self, t_end: float) -> list[Finding]:
        findings = self._end_run(t_end)
        self._ref = None
        self._last_t = None
        return findings

    # -- internals -----------------------------------------------------------------------------

    def _blocks_identical(self, sample: Luma, ref: Luma) -> bool:
        share = self.options.identical
        if share <= 0.0:
            return True
        if self._diff_buf is None or self._diff_buf.shape != sample.shape:
            self._diff_buf = np.empty(sample.shape, np.uint8)
        return identical_block_fraction(sample, ref, self._block_rows, out=self._diff_buf) >= share

    def _reencoded_picture(self, sample: Luma) -> bool:
        """Whether ``sample`` differs from the origin only as a new encoding of it would."""
        origin = self._origin
        assert origin is not None
        # The cheap test first: moving pictures fail it.
        to_origin = mafd_bounded(sample, origin, self._refresh_n)
        if to_origin > self._refresh_n:
            return False
        if self._origin_means is None:
            self._origin_means = block_means(origin, self._block_rows)
        block_shift, mean_shift = dc_shifts(block_means(sample, self._block_rows), self._origin_means)
        if block_shift > self._refresh_dc or mean_shift > self._refresh_mean:
            return False
        self._pending_mafd = to_origin
        return True

    def _accept_reencoded(self, sample: Luma) -> None:
        """Make re-encoded ``sample`` the reference (tentatively part of the freeze)."""
        self._ref = sample
        self._reencoded += 1
        self._max_mafd = max(self._max_mafd, self._pending_mafd)

    def _new_run(self, sample: Luma, t: float, full_range: bool, key_frame: bool) -> None:
        """Make ``sample`` (shown at ``t``) the origin and reference: a possible frozen picture."""
        self._key_t = t if key_frame else None
        self._origin = self._ref = sample
        self._origin_means = None
        self._run.begin(t)
        self._full_range = full_range
        self._identical = 0
        self._changing_since = self._unconfirmed_key = None
        self._reencoded = 0
        self._black = None
        self._max_mafd = 0.0
        self._pending_mafd = 0.0
        self._silent_audio = False
        self._overlay = None
        self._overlay_slices = []
        self._overlay_share = 0.0

    def _mask_overlay(self, sample: Luma, ref: Luma) -> Luma:
        """A copy of ``sample`` with the overlay's regions taken from ``ref``."""
        masked = np.ascontiguousarray(sample)
        if masked is sample:
            masked = sample.copy()
        for rows, cols in self._overlay_slices:
            masked[rows, cols] = ref[rows, cols]
        return masked

    def _grow_overlay(self, live: Luma, sample: Luma, ref: Luma) -> Luma | None:
        """``live`` masked by a grown overlay, if the regions that changed (with those already
        set aside) are few enough and everything else is identical to ``ref``; else None."""
        if self._probe_rest > 0:
            self._probe_rest -= 1
            return None
        opts = self.options
        # Cheap for moving pictures (and noisy static ones): too much changed for any overlay,
        # or too little is identical for the rest to be, even once the overlay is masked.
        min_identical = opts.identical - opts.overlay
        probe_shape = sample[:: self._block_rows].shape
        if self._probe_buf is None or self._probe_buf.shape != probe_shape:
            self._probe_buf = np.empty(probe_shape, np.uint8)
        identical, large = probe_macroblocks(sample, ref, self._block_rows, min_identical, self._probe_buf)
        if large > opts.overlay or identical < min_identical:
            self._probe_rest = PROBE_REST
            return None
        grid = self._grid
        if grid is None or grid.shape != sample.shape:
            grid = self._grid = RegionGrid(sample.shape, self.options.grid, self._block_rows)
        if self._diff_buf is None or self._diff_buf.shape != sample.shape:
            self._diff_buf = np.empty(sample.shape, np.uint8)
        cv2.absdiff(_cv(sample), _cv(ref), dst=self._diff_buf)
        changed = grid.mafd(self._diff_buf) > self._n
        overlay = changed if self._overlay is None else changed | self._overlay
        share = float(grid.area[overlay].sum())
        if not changed.any() or share > self.options.overlay:
            return None
        slices = grid.slices(overlay)
        before = self._overlay, self._overlay_slices
        self._overlay, self._overlay_slices = overlay, slices
        masked = self._mask_overlay(live, ref)
        if mafd(masked, ref) <= self._n and self._blocks_identical(masked, ref):
            self._overlay_share = share
            return masked
        self._overlay, self._overlay_slices = before
        return None

    def _end_run(self, t: float) -> list[Finding]:
        """End the current run at ``t`` (the first picture that differs, or the end of the media)."""
        if self._ref is None or self._identical == 0:
            return []
        ends = self._run.stop(t, lambda: not self._is_black())
        self._identical = 0
        return [self._finding(start, end, max(t, start)) for start, end in ends]

    def _is_black(self) -> bool:
        """Whether the frozen picture is black (then it is the black detector's defect)."""
        if self._black is None:
            assert self._origin is not None
            black = self.ctx.black_picture  # as the black detector judges it
            threshold = black_luma_threshold(black.pix_th, self._full_range)
            self._black = black_pixel_fraction(self._origin, threshold) >= black.pic_th
        return self._black

    def _audio_is_silent(self, t: float) -> bool:
        """Whether the programme's sound is gone at video time ``t`` (no audio, or silent)."""
        if not self.ctx.has_audio:
            return True
        since = self.ctx.audio_silent_since
        return since is not None and t - since >= self.options.audio_silent_s

    @property
    def _start(self) -> float:
        """t of the origin, s."""
        assert self._run.start is not None
        return self._run.start

    def _finding(self, start: float, end_s: float | None, t: float) -> Finding:
        return Finding(
            type=self.name,
            start_s=start,
            end_s=end_s,
            severity=Severity.CRITICAL if self._silent_audio else Severity.WARNING,
            metrics={
                "mafd_db": ratio_to_db(self._max_mafd),
                "duration_s": t - start,
                "reencoded": float(self._reencoded),
                "frozen_share": 1.0 - self._overlay_share,
            },
        )
