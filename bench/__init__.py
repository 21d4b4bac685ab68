"""Benchmarks of the worker's pipeline and of the system's AWS traffic: ``python -m bench``.

One module per concern: :mod:`bench.clips` (test media and the decode loops), :mod:`bench.timing`
(paired, repeated measurement), :mod:`bench.throughput`, :mod:`bench.detectors`,
:mod:`bench.ffmpeg`, :mod:`bench.capacity`, :mod:`bench.proxy` (a request-counting proxy in front
of the AWS emulator), :mod:`bench.aws_calls`, :mod:`bench.per_frame`, :mod:`bench.prices`,
:mod:`bench.profile` and :mod:`bench.report` (tables and ``BENCHMARKS.md``).
"""
