"""Picture comparison for freeze detection: MAFD, bit-identical macroblocks, block means, a
probe row per macroblock, and a grid of regions on macroblock boundaries.

Pictures are (h, w) uint8 luma, usually samples from :func:`macroblock_sample` (whole 16x16
macroblocks, every n-th row), so that "bit-identical block" means "skipped macroblock". The
work is done by OpenCV kernels and whole-array operations: numpy's reductions over short axes
cost ten times more.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

MACROBLOCK = 16  # H.264 / MPEG-2 macroblock side, pixels: the unit in which codecs copy a picture
CODES = 256  # MAFD normalisation, as freezedetect's (1 << bitdepth)
FLOOR_DB = -120.0  # reported for identical pictures instead of -inf

Luma = npt.NDArray[np.uint8]
BlockMeans = npt.NDArray[np.float64]


def db_to_ratio(db: float) -> float:
    """Amplitude ratio of ``db`` decibels (20 log10, freezedetect's convention: -60 dB = 0.001)."""
    return float(10.0 ** (db / 20.0))


def ratio_to_db(ratio: float) -> float:
    """Decibels (20 log10) of an amplitude ratio, floored at :data:`FLOOR_DB` (0 stays finite)."""
    if ratio <= 0.0:
        return FLOOR_DB
    return max(20.0 * math.log10(ratio), FLOOR_DB)


def cv_ready(a: Luma) -> Luma:
    """``a`` itself if OpenCV can use it without a copy (unit column stride), else a copy."""
    return a if a.strides[-1] == 1 else np.ascontiguousarray(a)


def macroblock_sample(luma: Luma, row_step: int) -> Luma:
    """A view of ``luma`` ((h, w) uint8) cropped to whole 16x16 macroblocks, every ``row_step``-th row.

    Cropping keeps the analysis grid on the codec's macroblock grid (so "bit-identical block"
    means "skipped macroblock"); a picture smaller than one macroblock is used whole.
    """
    h, w = luma.shape
    h16, w16 = h - h % MACROBLOCK, w - w % MACROBLOCK
    if h16 == 0 or w16 == 0:
        return luma[::row_step]
    return luma[:h16:row_step, :w16]


def mafd(a: Luma, b: Luma) -> float:
    """Mean absolute frame difference of two (h, w) uint8 pictures, normalised: mean |a - b| / 256.

    0 for identical pictures; 0.001 (-60 dB) is a quarter of a code on average.
    """
    if a.size == 0:
        return 0.0
    return float(cv2.norm(cv_ready(a), cv_ready(b), cv2.NORM_L1)) / (a.size * CODES)


def mafd_bounded(a: Luma, b: Luma, bound: float) -> float:
    """:func:`mafd` of ``a`` and ``b``, or, once their middle quarter of rows (or the middle and
    the top 3/8) alone proves it above ``bound``, that lower bound of it (still above ``bound``).

    A sum of absolute differences over some rows never exceeds the sum over all of them, so the
    answer to "is the MAFD at most ``bound``?" is exact either way; a moving picture usually
    fails it on the middle rows, for a quarter of the work, or on the middle and top ones, for
    5/8 of it (moving texture at 2.4 times ``bound``).
    """
    h = a.shape[0]
    if h < 8:
        return mafd(a, b)
    lo, hi = 3 * h // 8, 5 * h // 8
    scale = a.size * CODES
    total = float(cv2.norm(cv_ready(a[lo:hi]), cv_ready(b[lo:hi]), cv2.NORM_L1))  # the middle
    if total > bound * scale:
        return total / scale
    total += float(cv2.norm(cv_ready(a[:lo]), cv_ready(b[:lo]), cv2.NORM_L1))  # ... and the top
    if total > bound * scale:
        return total / scale
    return (total + float(cv2.norm(cv_ready(a[hi:]), cv_ready(b[hi:]), cv2.NORM_L1))) / scale


def identical_block_fraction(
    a: Luma, b: Luma, block_rows: int, block_cols: int = MACROBLOCK, out: Luma | None = None
) -> float:
    """Share (0..1) of ``block_rows`` x ``block_cols`` blocks in which ``a`` and ``b`` are equal.

    ``a`` and ``b`` are (h, w) uint8. When the blocks do not tile the picture (or ``block_cols``
    is not a multiple of 8) the whole picture counts as one block. ``out`` (contiguous uint8, the
    pictures' shape) is scratch space, to avoid allocating half a megabyte per picture.
    """
    h, w = a.shape
    if a.size == 0:
        return 1.0
    if out is None or out.shape != a.shape:
        out = np.empty(a.shape, np.uint8)
    diff = cv2.absdiff(cv_ready(a), cv_ready(b), dst=out)  # contiguous (h, w) uint8
    if h % block_rows or w % block_cols or block_cols % 8:
        return 0.0 if cv2.countNonZero(diff) else 1.0
    # OR 8 pixels at a time as one uint64 word: a block is identical iff all its words are zero.
    # (Reductions over short numpy axes are ~10x slower than these whole-array ORs.)
    words = diff.view(np.uint64).reshape(h, w // block_cols, block_cols // 8)
    per_row = words[:, :, 0].copy()
    for k in range(1, block_cols // 8):
        per_row |= words[:, :, k]
    rows = per_row.reshape(h // block_rows, block_rows, w // block_cols)
    per_block = rows[:, 0].copy()
    for r in range(1, block_rows):
        per_block |= rows[:, r]
    return 1.0 - np.count_nonzero(per_block) / per_block.size


def block_means(a: Luma, block_rows: int, block_cols: int = MACROBLOCK) -> BlockMeans:
    """Mean code of each ``block_rows`` x ``block_cols`` block of ``a`` ((h, w) uint8).

    Returns (h // block_rows, w // block_cols) float64; partial blocks at the right and bottom are
    ignored, and a picture smaller than one block is one block. Sums rows first in uint16 (at most
    16 x 255), then columns: exact, and ~6x faster than a 4-d reshape sum.
    """
    h, w = a.shape
    hb, wb = h // block_rows, w // block_cols
    if hb == 0 or wb == 0:
        return np.full((1, 1), float(a.mean()) if a.size else 0.0)
    cropped = a[: hb * block_rows, : wb * block_cols]
    column_sums = cropped.reshape(hb, block_rows, wb * block_cols).sum(axis=1, dtype=np.uint16)
    sums = column_sums.reshape(hb, wb, block_cols).sum(axis=2, dtype=np.uint32)
    means: BlockMeans = sums / float(block_rows * block_cols)
    return means


def dc_shifts(a: BlockMeans, b: BlockMeans) -> tuple[float, float]:
    """(largest |block mean shift|, |mean shift of the whole picture|) between two pictures'
    :func:`block_means`, both normalised by 256 like MAFD."""
    shift = a - b
    return float(np.abs(shift).max()) / CODES, abs(float(shift.mean())) / CODES


PROBE_BIG = 8  # codes: a change this large in a probe row is content, not re-encoding


def probe_macroblocks(
    a: Luma, b: Luma, block_rows: int, min_identical: float = 0.0, out: Luma | None = None
) -> tuple[float, float]:
    """(share of macroblocks identical, share changed by more than :data:`PROBE_BIG` codes) on
    one sample row per macroblock: a quick look before judging a picture region by region. When
    fewer than ``min_identical`` are identical, the second share is not measured (reported 1.0).

    ``a`` and ``b`` are samples from :func:`macroblock_sample` ((h, w) uint8, whole macroblocks
    of ``block_rows`` sample rows). A macroblock identical over all its rows is identical on the
    probe row, and one changed by more than PROBE_BIG codes there is changed; so the first share
    is an upper bound of the identical ones, the second a lower bound of the changed ones.
    """
    pa, pb = cv_ready(a[::block_rows]), cv_ready(b[::block_rows])
    h, w = pa.shape
    if w % MACROBLOCK or h == 0:
        return (1.0, 0.0) if np.array_equal(pa, pb) else (0.0, 1.0)
    if out is None or out.shape != pa.shape:
        out = np.empty(pa.shape, np.uint8)
    diff = cv2.absdiff(pa, pb, dst=out)
    words = diff.view(np.uint64)  # two words per macroblock row
    changed = np.count_nonzero(words[:, 0::2] | words[:, 1::2])
    blocks = h * (w // MACROBLOCK)
    if 1.0 - changed / blocks < min_identical:
        return 1.0 - changed / blocks, 1.0
    _, big = cv2.threshold(diff, PROBE_BIG, 255, cv2.THRESH_BINARY, dst=out)
    words = big.view(np.uint64)
    large = np.count_nonzero(words[:, 0::2] | words[:, 1::2])
    return 1.0 - changed / blocks, large / blocks


class RegionGrid:
    """A grid of regions on macroblock boundaries over a (h, w) sample of a picture.

    ``rows`` and ``cols`` are the edges (sample rows, pixel columns) of up to ``grid`` regions per
    side, each at least one macroblock (``block_rows`` sample rows by 16 columns); ``area`` is
    each region's share of the picture, (len(rows), len(cols)).
    """

    def __init__(self, shape: tuple[int, int], grid: int, block_rows: int) -> None:
        h, w = shape
        mb_rows, mb_cols = max(1, h // block_rows), max(1, w // MACROBLOCK)
        row_mbs = np.unique(np.linspace(0, mb_rows, min(grid, mb_rows) + 1).round().astype(np.int64))
        col_mbs = np.unique(np.linspace(0, mb_cols, min(grid, mb_cols) + 1).round().astype(np.int64))
        row_edges = np.minimum(row_mbs * block_rows, h)
        col_edges = np.minimum(col_mbs * MACROBLOCK, w)
        row_edges[-1], col_edges[-1] = h, w  # the last region takes any remainder
        self.shape = shape
        self.rows = row_edges[:-1]
        self.cols = col_edges[:-1]
        heights, widths = np.diff(row_edges), np.diff(col_edges)
        self.pixels: npt.NDArray[np.float64] = np.outer(heights, widths).astype(np.float64)
        self.area: npt.NDArray[np.float64] = self.pixels / float(h * w)
        self._row_edges, self._col_edges = row_edges, col_edges

    def mafd(self, diff: Luma) -> npt.NDArray[np.float64]:
        """MAFD (mean |difference| / 256) of each region, from an absolute difference picture.

        From the picture's integral (one OpenCV pass; numpy's ``add.reduceat`` over the rows
        cost ten times more): each region's sum is four corners of it.
        """
        ii = cv2.integral(diff).astype(np.int64)  # (h + 1, w + 1); a 4K sample fits int32 too
        r, c = self._row_edges, self._col_edges
        corners = ii[np.ix_(r, c)]
        sums = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
        result: npt.NDArray[np.float64] = sums / (self.pixels * CODES)
        return result

    def slices(self, mask: npt.NDArray[np.bool_]) -> list[tuple[slice, slice]]:
        """(rows, columns) slices of the regions in ``mask``, runs of a row's regions merged."""
        out: list[tuple[slice, slice]] = []
        r_edges, c_edges = self._row_edges, self._col_edges
        for r in range(mask.shape[0]):
            c = 0
            while c < mask.shape[1]:
                if not mask[r, c]:
                    c += 1
                    continue
                first = c
                while c < mask.shape[1] and mask[r, c]:
                    c += 1
                out.append(
                    (slice(int(r_edges[r]), int(r_edges[r + 1])), slice(int(c_edges[first]), int(c_edges[c])))
                )
        return out
