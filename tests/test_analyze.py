"""`avmon analyze` as a user runs it: progress on a terminal, a summary per type, stdout that is
only JSON with --json, and reports (HTML that opens in Chromium with its pictures, and JSON)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avmon.report import summarise
from tests.browser import CHROMIUM, Browser, crop, saturation
from tests.media import make_testsrc

SCRIPT = "black@1+2.5,silence@2+2.5"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analyze") / "clip.ts"
    make_testsrc(path, duration_s=5.0, script=SCRIPT, seed=4, width=320, height=180)
    return path


def run_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """`avmon analyze` with stderr on a pseudo-terminal (as in a shell) and stdout on a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "avmon", "analyze", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    terminal = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            terminal += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read().decode()
    return proc.wait(timeout=30), out, terminal.decode(errors="replace")


def test_on_a_terminal_it_shows_progress_and_ends_with_a_summary(clip: Path) -> None:
    code, out, terminal = run_on_a_terminal(str(clip), "--realtime")  # ~5 s: progress every 0.5 s
    assert code == 0, terminal
    assert "× real time · " in terminal and "so far" in terminal and "\r\x1b[K" in terminal
    assert "so far" not in out  # progress is the terminal's, not the output's
    lines = out.splitlines()
    assert lines[0].startswith("started black") and any(line.startswith("ended   silence") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("type "))
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[header + 1 :]}
    assert rows == {
        "black": pytest.approx([1, 2.5, 2.5, 1.0], abs=0.1),
        "silence": pytest.approx([1, 2.5, 2.5, 2.0], abs=0.1),
    }


def test_with_json_stdout_is_only_json_lines(clip: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    code, out, terminal = run_on_a_terminal(str(clip), "--json", "--realtime", "--report", str(report))
    assert code == 0, terminal
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["type"] for r in records] == ["black", "silence"]
    assert [(r["start_s"], r["end_s"]) for r in records] == [
        pytest.approx((1.0, 3.5), abs=0.1),
        pytest.approx((2.0, 4.5), abs=0.1),
    ]
    assert "black " in terminal and "so far" in terminal  # summary and progress: on stderr

    saved = json.loads(report.read_text())
    assert saved["summary"] == summarise(records)
    assert [d["defect_id"] for d in saved["defects"]] == [r["defect_id"] for r in records]
    black = saved["defects"][0]["evidence"]
    assert [th["role"] for th in black["thumbnails"]] == ["start", "end"] and black["trace"]["luma_mean"]


def test_summary_counts_and_durations_per_type() -> None:
    defects = [
        {"type": "black", "start_s": 1.0, "end_s": 4.0},
        {"type": "black", "start_s": 10.0, "end_s": 11.5},
        {"type": "silence", "start_s": 2.0, "end_s": 2.5},
    ]
    assert summarise(defects) == {
        "black": {"count": 2, "total_s": 4.5, "longest_s": 3.0, "first_s": 1.0},
        "silence": {"count": 1, "total_s": 0.5, "longest_s": 0.5, "first_s": 2.0},
    }


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (CI installs it)")
async def test_html_report_opens_in_chromium_with_its_pictures(clip: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    done = subprocess.run(  # noqa: ASYNC221 (nothing else runs meanwhile)
        [sys.executable, "-m", "avmon", "analyze", str(clip), "--report", str(report)],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    async with Browser(tmp_path / "profile", height=2400) as browser:  # the whole report in view
        await browser.goto(report.as_uri())
        sizes = await browser.eval(
            "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(sizes) == 4 and all(s == [True, 160, 90] for s in sizes)  # start and end of each defect
        assert await browser.eval("document.querySelectorAll('svg.trace polyline').length") >= 6
        shot = await browser.screenshot()
        black_start = crop(shot, await browser.box("section.defect img"))
        assert float(black_start.mean()) < 20  # the black defect's own picture
        # The silence outlasts the black: its end picture is the moving test card, in colour.
        silence_end = crop(shot, await browser.box("section.defect:nth-of-type(2) figure:last-child img"))
        assert saturation(silence_end) > 40 and float(np.asarray(silence_end).mean()) > 40
    assert all(u.startswith(("file:", "data:", "about:")) for u in browser.requests)


def test_it_imports_nothing_of_the_stack_or_scipy_signal(clip: Path) -> None:
    # Start-up is most of a short file's analysis: AWS clients, the router, HTTP and scipy.signal
    # (0.7 s alone) are other commands' imports.
    code = (
        "import sys; from avmon.cli import main\n"
        "try:\n    main(['analyze', sys.argv[1]])\nexcept SystemExit as exc:\n    assert exc.code == 0, exc\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(clip)], capture_output=True, text=True, check=True)
    loaded = set(done.stderr.split())
    assert "worker.detectors.loudness" in loaded  # it did analyse
    heavy = {"scipy.signal", "boto3", "botocore", "aioboto3", "moto", "urllib.request", "router", "infra"}
    assert loaded & heavy == set()
