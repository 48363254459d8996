"""The sandbox of a budgeted stage: answers from a child process, its errors as item
failures, a child that dies started again, a budget enforced from outside."""

from __future__ import annotations

import os

import pytest

from ingest.budget import Budget, BudgetExceeded, ItemFailed, Sandbox
from tests.jobs.stages import Crasher

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


def test_the_time_budget_grows_with_the_drive_and_says_what_it_was() -> None:
    b = Budget(time_s=300, time_per_gib_s=120, memory_bytes=4 << 30)
    assert b.seconds_for(0) == 300 and b.seconds_for(3 << 29) == 480
    assert Budget.describe_bytes(b.memory_bytes) == "4 GiB" and Budget.describe_bytes(512 << 20) == "512 MiB"
