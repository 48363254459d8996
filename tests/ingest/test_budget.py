"""The sandbox of a budgeted stage: answers from a child process, its errors as item
failures, a child that dies started again, a budget enforced from outside."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator

import pytest

from ingest import budget
from ingest.budget import Budget, BudgetExceeded, ItemFailed, Sandbox, end_idle
from tests.jobs.stages import Crasher, Doubler

ROOMY = Budget(time_s=120, time_per_gib_s=0, memory_bytes=0)


def test_the_sandbox_answers_from_a_child_reports_its_errors_and_replaces_it_when_it_dies() -> None:
    box = Sandbox(Crasher, (), method="process_batch", retries=1)
    try:
        ((value, pid, _),) = box.run([2], ROOMY)
        assert value == 4 and pid != os.getpid()
        with pytest.raises(ItemFailed, match="ValueError while decoding"):
            box.run([13], ROOMY)
        with pytest.raises(
            BudgetExceeded, match=r"crashed its worker 2 times \(decoder process killed by SIGABRT\)"
        ):
            box.run([7], ROOMY)
        ((value, pid_after, _),) = box.run([3], ROOMY)
        assert value == 6 and pid_after not in (pid, os.getpid())
    finally:
        box.close()


@pytest.fixture
def no_idle_children() -> Iterator[None]:
    end_idle()
    yield
    end_idle()


def _pid(box: Sandbox, item: int = 1) -> tuple[int, int, int]:
    ((value, pid, setups),) = box.run([item], ROOMY)
    return value, pid, setups


@pytest.mark.usefixtures("no_idle_children")
def test_a_dropped_sandboxs_child_serves_the_next_one_built_anew_when_started_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = Sandbox(Doubler, (0,), method="process_batch")
    value, pid, setups = _pid(first, 2)
    assert value == 4
    del first
    gc.collect()
    second = Sandbox(Doubler, (100,), method="process_batch")
    # the same process, the stage built again there with the new sandbox's arguments
    assert _pid(second, 2) == (104, pid, setups + 1)
    other = Sandbox(Doubler, (0,), method="process_batch")  # two at once: a child each
    other_pid = _pid(other)[1]
    assert other_pid not in (pid, os.getpid())
    del second, other
    gc.collect()
    monkeypatch.setenv("FLEETMINE_FAULT_SEEN_BY_CHILD", "1")  # a child sees the environment it started in
    third = Sandbox(Doubler, (0,), method="process_batch")
    third_pid = _pid(third)[1]
    assert third_pid not in (pid, other_pid)
    del third
    gc.collect()
    # a child about to end itself for idling is never handed work
    monkeypatch.setattr(budget, "_IDLE_EXIT_S", budget._IDLE_MARGIN_S + 0.2)
    time.sleep(0.4)
    fourth = Sandbox(Doubler, (0,), method="process_batch")
    assert _pid(fourth)[1] not in (pid, other_pid, third_pid)
    fourth.close()
    # one ended for its budget or its crash is never handed on either
    crashing = Sandbox(Crasher, (), method="process_batch", retries=0)
    crashed_pid = _pid(crashing)[1]
    with pytest.raises(BudgetExceeded):
        crashing.run([7], ROOMY)
    del crashing
    gc.collect()
    assert crashed_pid not in {c.proc.pid for c in budget._idle}


def test_the_time_budget_grows_with_the_drive_and_says_what_it_was() -> None:
    b = Budget(time_s=300, time_per_gib_s=120, memory_bytes=4 << 30)
    assert b.seconds_for(0) == 300 and b.seconds_for(3 << 29) == 480
    assert Budget.describe_bytes(b.memory_bytes) == "4 GiB" and Budget.describe_bytes(512 << 20) == "512 MiB"
