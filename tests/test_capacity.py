"""Admission by measured cost and one-at-a-time shedding (worker/capacity.py): pure rules."""

from __future__ import annotations

import pytest

from worker.capacity import Admission, StreamLoad

P720 = 1280 * 720 * 25.0


def measured(cost: float, *, started: float = 0.0, at: float = 30.0, pixel_rate: float = P720) -> StreamLoad:
    """A stream that has run since ``started`` and used ``cost`` cores all along."""
    load = StreamLoad(started=started)
    for t in range(int(started), int(at) + 1, 2):
        load.observe(float(t), cost * (t - started), pixel_rate, 0.1)
    return load


def test_an_empty_worker_takes_one_stream_whatever_it_may_cost() -> None:
    admission = Admission(cores=0.5, target=0.1)
    assert admission.free_slots([]) == 1


def test_streams_are_taken_while_their_measured_cost_stays_under_the_target() -> None:
    admission = Admission(cores=2.0, target=0.75)
    loads = [measured(0.125) for _ in range(8)]  # 1.0 of the 1.5 cores allowed
    # The next one, not yet probed, is expected to cost as the costliest measured here.
    assert admission.unopened(loads) == pytest.approx(0.125)
    assert admission.free_slots(loads) == 4  # 0.5 cores of room


def behind_for(load: StreamLoad, lags: list[float], start: float = 32.0) -> None:
    for i, lag in enumerate(lags):
        load.observe(start + 2 * i, 0.05 * (start + 2 * i), P720, lag)


def test_no_stream_is_taken_while_one_stays_behind_real_time_whatever_the_cpu() -> None:
    admission = Admission(cores=2.0, target=0.75)
    loads = [measured(0.05) for _ in range(4)]  # 0.2 of 1.5 cores: CPU says take more
    assert admission.free_slots(loads) > 0
    behind_for(loads[0], [1.4] * 8)  # but one stream has been 1.4 s behind for 16 s
    assert admission.free_slots(loads) == 0


def test_an_hls_stream_a_segment_behind_at_times_does_not_stop_admission() -> None:
    admission = Admission(cores=2.0, target=0.75)
    loads = [measured(0.05) for _ in range(4)]
    behind_for(loads[0], [5.8, 3.8, 1.8, 0.1, 5.9, 3.9, 1.9, 0.1])  # 6 s segments, caught up
    assert admission.free_slots(loads) > 0


def test_before_anything_is_measured_a_new_stream_is_expected_to_cost_a_1080p30_one() -> None:
    admission = Admission(cores=2.0, target=0.75)
    warming = StreamLoad(started=0.0)
    warming.observe(1.0, 0.01, P720, None)
    assert admission.unopened([warming]) == pytest.approx(1920 * 1080 * 30 * admission.cores_per_pixel_s)


def test_a_stream_not_yet_measured_counts_at_its_expected_cost() -> None:
    admission = Admission(cores=2.0, target=0.75)
    warming = StreamLoad(started=0.0)
    warming.observe(1.0, 0.01, P720, None)
    assert admission.cost(warming) == admission.expected(warming) == P720 * admission.cores_per_pixel_s


def test_the_process_cpu_counts_when_it_is_more_than_its_streams() -> None:
    admission = Admission(cores=2.0, target=0.75)
    loads = [measured(0.1)]
    assert admission.free_slots(loads, process_cores=1.5) == 0


def test_the_configured_capacity_is_an_upper_bound() -> None:
    admission = Admission(cores=8.0, target=0.75, max_streams=3)
    loads = [measured(0.01) for _ in range(3)]
    assert admission.free_slots(loads) == 0


def test_learning_moves_the_expected_cost_towards_what_streams_measure() -> None:
    admission = Admission(cores=2.0)
    before = admission.cores_per_pixel_s
    admission.learn([measured(0.5)])  # far costlier than the prior
    assert before < admission.cores_per_pixel_s < 0.5 / P720


def test_nothing_is_shed_while_streams_keep_up() -> None:
    admission = Admission(cores=2.0)
    loads = {f"s{i}": measured(0.1, started=float(i)) for i in range(4)}
    assert admission.to_shed(loads, now=100.0) is None


def lagging(load: StreamLoad, lags: list[float]) -> StreamLoad:
    for lag in lags:
        load.lags.append(lag)
    return load


def test_one_stream_is_shed_when_one_falls_behind_the_most_recently_taken() -> None:
    admission = Admission(cores=2.0, shed_lag_s=3.0)
    loads = {f"s{i}": lagging(measured(0.1, started=float(i)), [2.0, 3.5, 5.0]) for i in range(4)}
    assert admission.to_shed(loads, now=100.0) == "s3"


def test_after_a_shed_the_others_get_time_to_recover() -> None:
    admission = Admission(cores=2.0, shed_lag_s=3.0, recover_s=20.0)
    loads = {f"s{i}": lagging(measured(0.1, started=float(i)), [2.0, 3.5, 5.0]) for i in range(4)}
    assert admission.to_shed(loads, now=100.0) == "s3"
    del loads["s3"]
    assert admission.to_shed(loads, now=110.0) is None
    assert admission.to_shed(loads, now=121.0) == "s2"


def test_a_lag_beyond_the_limit_that_is_shrinking_is_no_reason_to_shed() -> None:
    admission = Admission(cores=2.0, shed_lag_s=3.0)
    loads = {"s0": lagging(measured(0.1), [9.0, 7.0, 5.0])}  # catching up after a stall
    assert admission.to_shed(loads, now=100.0) is None
