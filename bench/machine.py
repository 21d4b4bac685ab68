"""What the numbers were measured on: machine, load, versions, commit, date."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("av", "numpy", "opencv-python-headless", "scipy", "moto", "botocore", "aioboto3", "pyinstrument")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


@dataclass(frozen=True)
class Machine:
    date: str
    cpu: str
    cores: int
    memory_gib: float
    system: str
    python: str
    versions: dict[str, str]
    ffmpeg_libs: dict[str, str]
    commit: str
    load_at_start: tuple[float, float, float]


def describe() -> Machine:
    import av

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    libs = {name: ".".join(str(v) for v in version) for name, version in av.library_versions.items()}
    commit = _git("rev-parse", "--short", "HEAD")
    # BENCHMARKS.md is the bench's own output (and its notes): not a change to what it measures.
    if commit and _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)BENCHMARKS.md"):
        commit += " (with uncommitted changes)"
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        memory_gib=round(memory_gib(), 1),
        system=f"{platform.system()} {platform.release()}",
        python=sys.version.split()[0],
        versions=versions,
        ffmpeg_libs=libs,
        commit=commit or "unknown",
        load_at_start=load_average(),
    )
