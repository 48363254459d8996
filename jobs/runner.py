"""One way to run a stage: in this process, or on Ray, with the same contract.

A stage (``ingest.interfaces.Stage``) declares ``resources``, loads what it needs
in ``setup()`` and turns a batch of items into results with ``process_batch``.
It is given to a runner as a :class:`StageSpec` (its class and constructor
arguments, picklable), so the runner builds it where it runs:

- :class:`SequentialRunner` builds it once in this process: unit tests, a laptop.
- :class:`RayRunner` runs each batch as a Ray task with the stage's resources;
  every worker process builds and sets up the stage once and keeps it for the
  next batches it gets (a model is loaded once per worker, not per batch).
  Workers are recycled after ``max_calls`` batches, so leaks in native decoders
  cannot pile up, and a batch whose worker dies (a segfault in FFmpeg) is retried
  ``max_retries`` times on a fresh worker.

Either way a failure of one batch is data, not an exception: the runner returns
an :class:`Outcome` per item, and a stage that knows how to describe a failed item
(``failed(item, reason)``, e.g. the drive record of a drive that crashed its
decoder) gets to. The job that composed the stage decides what to commit.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from storage.errors import JobError

__all__ = [
    "Outcome",
    "RayRunner",
    "Runner",
    "SequentialRunner",
    "StageSpec",
    "default_runner",
    "single_item_runner",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class StageSpec:
    """How to build a stage where it runs: ``cls(*args, **kwargs)``, then ``setup()``."""

    cls: type
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # one built stage per worker per key
    needs: dict[str, float] | None = None  # overrides the class's ``resources`` (an encoder's own)

    def build(self) -> Any:
        stage = self.cls(*self.args, **self.kwargs)
        stage.setup()
        return stage

    @property
    def resources(self) -> dict[str, float]:
        return dict(self.needs or getattr(self.cls, "resources", None) or {"num_cpus": 1.0})


@dataclass
class Outcome(Generic[T, R]):
    """One item's result, or why it has none."""

    item: T
    result: R | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


OnOutcome = Callable[[Outcome[Any, Any]], None]


class Runner(Protocol):
    def map(
        self,
        spec: StageSpec,
        items: Sequence[Any],
        *,
        batch_size: int = 1,
        on_outcome: OnOutcome | None = None,
    ) -> list[Outcome[Any, Any]]:
        """Every item through the stage; outcomes in the order the items were given."""
        ...


def _batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), max(1, size)):
        yield list(items[i : i + max(1, size)])


def _as_outcomes(
    stage: Any, batch: list[Any], reason: str | None, results: list[Any] | None
) -> list[Outcome[Any, Any]]:
    if reason is None and results is not None:
        if len(results) != len(batch):
            reason = f"stage returned {len(results)} results for {len(batch)} items"
        else:
            return [Outcome(item, result) for item, result in zip(batch, results, strict=True)]
    assert reason is not None
    describe = getattr(stage, "failed", None) if stage is not None else None
    return [_described(describe, item, reason) for item in batch]


def _described(describe: Callable[[Any, str], Any] | None, item: Any, reason: str) -> Outcome[Any, Any]:
    """A failed item's outcome, with the stage's record of it where the stage gives one.

    Describing runs in the job's own process too (after a worker died), where an
    exception would end the whole job: one that raises leaves the item with the
    plain reason and no record."""
    if describe is None:
        return Outcome(item, None, reason)
    try:
        return Outcome(item, describe(item, reason), reason)
    except Exception as exc:  # a bug or an input nobody foresaw, again: this item only
        log.warning("describing a failed item raised: %s", "".join(traceback.format_exception(exc)))
        return Outcome(item, None, f"{reason}; its failure record failed too: {type(exc).__name__}")


def _run_batch(stage: Any, batch: list[Any]) -> list[Outcome[Any, Any]]:
    try:
        results = stage.process_batch(batch)
    except Exception as exc:  # a bug or an input nobody foresaw: these items fail, the job goes on
        log.warning("batch of %d failed: %s", len(batch), "".join(traceback.format_exception(exc)))
        # The type only: an exception's text can quote the input's bytes (a file's lines, a
        # drive.json value), and a reason lands in tables a reader token can see.
        return _as_outcomes(stage, batch, f"{type(exc).__name__} (traceback in the worker log)", None)
    return _as_outcomes(stage, batch, None, list(results))


class SequentialRunner:
    """The stage built once here; batches one after another."""

    def map(
        self,
        spec: StageSpec,
        items: Sequence[Any],
        *,
        batch_size: int = 1,
        on_outcome: OnOutcome | None = None,
    ) -> list[Outcome[Any, Any]]:
        if not items:
            return []
        stage = spec.build()
        out: list[Outcome[Any, Any]] = []
        for batch in _batches(items, batch_size):
            for o in _run_batch(stage, batch):
                out.append(o)
                if on_outcome:
                    on_outcome(o)
        return out


_WORKER_STAGES: dict[str, Any] = {}


def _remote_batch(spec: StageSpec, batch: list[Any]) -> list[Outcome[Any, Any]]:
    """In a Ray worker: the stage this worker built for ``spec`` (built on first use)."""
    stage = _WORKER_STAGES.get(spec.key)
    if stage is None:
        try:
            stage = _WORKER_STAGES[spec.key] = spec.build()
        except Exception as exc:  # setup itself failed (a missing model file): every item says so
            return _as_outcomes(None, batch, f"stage setup failed: {type(exc).__name__}: {exc}", None)
    return _run_batch(stage, batch)


@dataclass
class RayRunner:
    """Batches as Ray tasks on a local Ray or the cluster at ``address``."""

    address: str | None = None
    max_retries: int = 2
    max_calls: int = 8

    def map(
        self,
        spec: StageSpec,
        items: Sequence[Any],
        *,
        batch_size: int = 1,
        on_outcome: OnOutcome | None = None,
    ) -> list[Outcome[Any, Any]]:
        if not items:
            return []
        from jobs.runtime import init_ray

        ray = init_ray(self.address)
        # A stage may ask to be spread over the nodes (index shards: each node builds its
        # share, none holds them all); by default Ray packs tasks onto the fewest nodes.
        placement = (
            {"scheduling_strategy": s} if (s := getattr(spec.cls, "scheduling_strategy", None)) else {}
        )
        task = ray.remote(
            max_retries=self.max_retries,
            retry_exceptions=False,
            max_calls=self.max_calls,
            **spec.resources,
            **placement,
        )(_remote_batch)
        spec_ref = ray.put(spec)
        batches = list(_batches(items, batch_size))
        pending = {task.remote(spec_ref, b): i for i, b in enumerate(batches)}
        done: dict[int, list[Outcome[Any, Any]]] = {}
        describer: Any = None
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    if _is_import_failure(exc):  # every item would fail the same way: the job cannot go on
                        raise JobError(
                            f"Ray workers cannot import fleetmine ({getattr(exc, 'cause', exc)!r}): install "
                            "it on the cluster's nodes or let fleetmine ship its code (FLEETMINE_SHIP_CODE=1)"
                        ) from exc
                    # The worker died under this batch on every try: the items fail, the job goes on.
                    if describer is None:
                        describer = spec.cls(*spec.args, **spec.kwargs)  # no setup: only to describe
                    reason = f"crashed its worker {self.max_retries + 1} times: {type(exc).__name__}"
                    outcomes = _as_outcomes(describer, batches[i], reason, None)
                done[i] = outcomes
                if on_outcome:
                    for o in outcomes:
                        on_outcome(o)
        return [o for i in range(len(batches)) for o in done[i]]


def _is_import_failure(exc: Exception) -> bool:
    cause = getattr(exc, "cause", None)
    return isinstance(cause, ImportError) or "ModuleNotFoundError" in str(exc)[:2000]


def default_runner(address: str | None, max_retries: int = 2) -> Runner:
    """The runner a job of many items uses unless told otherwise: Ray, local or at ``address``."""
    return RayRunner(address, max_retries=max_retries)


def single_item_runner(address: str | None) -> Runner:
    """For a job of one item (mine, index): this process, unless a cluster is named, so
    a laptop run does not start Ray for a single task."""
    return RayRunner(address) if address else SequentialRunner()
