"""The lease protocol simulated at small scale: the invariants the 10,000-stream run reports."""

from __future__ import annotations

from bench.ownership import simulate
from worker.leases import LeaseView, adoption_limit, needs_registry, plan_rebalance


def _views(counts: dict[str, int], orphans: int = 0) -> list[LeaseView]:
    views = [LeaseView(f"{w}-{i}", 1, w, 1) for w, n in counts.items() for i in range(n)]
    return views + [LeaseView(f"o-{i}", 1, None, 1) for i in range(orphans)]


def test_newcomer_steals_from_the_most_loaded_worker() -> None:
    target = plan_rebalance(_views({"a": 9, "b": 3}), "c")
    assert target is not None and target.owner == "a"


def test_nobody_steals_once_holdings_are_within_the_share() -> None:
    assert plan_rebalance(_views({"a": 3, "b": 3, "c": 3}), "c") is None


def test_idle_workers_in_the_registry_lower_the_share() -> None:
    # 32 workers hold 16 each; without the registry an idle newcomer thinks the share is 16.
    counts = {f"w{n}": 16 for n in range(31)}
    assert plan_rebalance(_views(counts), "idle") is None
    registry = set(counts) | {f"idle{n}" for n in range(19)}
    assert plan_rebalance(_views(counts), "idle0", registry) is not None


def test_a_balanced_cluster_skips_reading_the_registry() -> None:
    assert not needs_registry(_views({"a": 4, "b": 3, "c": 3}), "c")


def test_the_registry_is_read_when_a_steal_may_be_due_or_leases_lapsed() -> None:
    assert needs_registry(_views({"a": 5, "b": 3}), "b")  # two more than this worker
    assert needs_registry(_views({}), "idle") is False  # nothing held: nothing to balance
    assert needs_registry(_views({"a": 3}), "idle")  # a newcomer
    assert needs_registry(_views({"a": 3, "b": 3}, orphans=1), "a")  # failover


def test_skipping_the_registry_never_skips_a_steal() -> None:
    # Wherever needs_registry says no, plan_rebalance finds nothing, with any registry.
    for counts in ({"a": 4, "b": 3, "c": 3}, {"a": 1, "b": 2}, {"a": 16, "b": 16}):
        for me in counts:
            if not needs_registry(_views(counts), me):
                registry = set(counts) | {f"idle{n}" for n in range(40)}
                assert plan_rebalance(_views(counts), me, registry) is None


def test_adoption_after_a_crash_is_capped_at_the_share_plus_one() -> None:
    assert adoption_limit(_views({"a": 10, "b": 10}, orphans=10), "a", {"a", "b", "c"}) == 1
    assert adoption_limit(_views({}, orphans=30), "a", {"a", "b", "c"}) == 11


def test_simulated_crashes_never_let_a_stale_owner_write_and_streams_fail_over_in_time() -> None:
    figures = simulate(300, 30, 240.0, capacity=16, crashes_per_minute=3.0, seed=3)
    summary = figures.summary()
    assert figures.crashes > 0 and summary["writes_accepted_from_non_holders"] == 0
    assert summary["failover_max_s"] <= 30
    assert summary["max_above_fair_share"] <= 1
