"""A Ray Data ``Datasink`` that commits a whole dataset to Delta once, idempotently.

Ray's own ``Dataset.write_delta`` also commits once from the driver, but it cannot
carry Delta's application transaction id, so a retried or resumed job would
append twice. This sink shares :class:`storage.delta.TableWriter` with plain Ray
tasks and commits with the run's ``txn``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from deltalake.transaction import AddAction
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from storage.delta import CommitResult, Txn
from storage.lake import Lake

__all__ = ["DeltaTxnDatasink"]

log = logging.getLogger(__name__)


class DeltaTxnDatasink(Datasink[list[AddAction]]):
    def __init__(self, lake: Lake, table: str, txn: Txn):
        self._lake = lake
        self._table = table
        self._txn = txn
        self.result: CommitResult | None = None

    def on_write_start(self, schema: Any = None) -> None:
        self._lake.create_tables([self._table])

    def write(self, blocks: Iterable[Block], ctx: Any) -> list[AddAction]:
        writer = self._lake.writer(self._table)
        actions: list[AddAction] = []
        for block in blocks:
            data = BlockAccessor.for_block(block).to_arrow()
            if data.num_rows:
                actions.extend(writer.write(writer.spec.conform(data)))
        return actions

    def on_write_complete(self, write_result: WriteResult[list[AddAction]]) -> None:
        actions = [a for part in write_result.write_returns if part for a in part]
        self.result = self._lake.commit(self._table, actions, self._txn)

    def on_write_failed(self, error: Exception) -> None:
        # Nothing was committed: the table is as it was; written files are orphans
        # that `fleetmine lake maintain` vacuums after the retention period.
        log.error("write to %s (run %s) failed before commit: %s", self._table, self._txn, error)
