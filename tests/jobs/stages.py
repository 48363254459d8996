"""Toy stages for the runner contract tests (importable by Ray workers)."""

from __future__ import annotations

import os
from typing import ClassVar


class Doubler:
    """Doubles numbers; 13 is a bad item; says which process and which setup handled it."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}
    setups = 0

    def __init__(self, offset: int = 0):
        self.offset = offset
        self.ready = False

    def setup(self) -> None:
        Doubler.setups += 1
        self.ready = True

    def process_batch(self, items: list[int]) -> list[tuple[int, int, int]]:
        assert self.ready, "process_batch before setup"
        if 13 in items:
            raise ValueError("13 is unlucky")
        return [(2 * i + self.offset, os.getpid(), Doubler.setups) for i in items]

    def failed(self, item: int, reason: str) -> tuple[int, int, int]:
        return (-1, 0, 0)


class Crasher(Doubler):
    def process_batch(self, items: list[int]) -> list[tuple[int, int, int]]:
        if 7 in items:
            os.abort()
        return super().process_batch(items)
