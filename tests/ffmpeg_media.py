"""Kept for importers outside tests/ (``bench.accuracy`` runs the tests' ffmpeg CLI runner): the
makers live in :mod:`tests.media`."""

from tests.media import ffmpeg as ffmpeg
