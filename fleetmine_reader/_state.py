"""Where a reader is in an epoch, and how an epoch's remaining shards are dealt again
when the job is resized.

An epoch's work is a list of *items*: a shard (its position in the manifest) and the
sample of that shard's order to start from (0 unless the item is the rest of a shard a
reader of an earlier world size had begun). A fresh epoch deals the shuffled shards
round-robin to the ``splits = world_size * num_workers`` splits. A split's state is
``(shard, offset)``: the ``shard``-th item of its list, after ``offset`` samples of that
shard's order (absolute, so a resumed item keeps counting from where it began).

Resize (:meth:`ReaderState.resize`): the states of all ``S`` splits, saved at one point,
become one :class:`Redeal` layer: what is left of each old split's list (the started item
from its offset, then the rest), concatenated in split order and dealt round-robin to
the new splits. Layers stack, one per resize. A split's list at any depth is a lazy view
(:class:`_Dealt`, :class:`_Rest`): its length and its i-th item are computed from the
shuffled order and the layers, never materialised, so a manifest of 10^6 shards costs
one order array per epoch and no per-split copies.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np

from fleetmine_reader._errors import StateMismatchError

Item = tuple[int, int]  # (shard position in the manifest, first sample of its order)


@dataclass(frozen=True)
class Redeal:
    """One resize: the ``splits`` the epoch was dealt to before it, each one's
    ``(shard, offset)`` then (in split order), and the shards they had skipped."""

    splits: int
    at: tuple[Item, ...]
    skipped: tuple[Item, ...] = ()


@dataclass(frozen=True)
class ReaderState:
    """Where a reader is: in ``epoch``, the ``shard``-th item of its split's list, after
    ``offset`` samples of that shard's order. ``split``/``splits`` and ``dataset`` (a
    fingerprint of the manifest, seed and shuffle) tie it to a reader; ``skipped`` lists
    the shards this split skipped as bad (``(shard, from sample)``), ``deal`` the resizes
    the epoch went through. A state from :meth:`start` or :meth:`resize` is not bound to a
    split yet: any reader of the epoch starts from it."""

    epoch: int
    shard: int = 0
    offset: int = 0
    split: int | None = None
    splits: int | None = None
    dataset: str | None = None
    skipped: tuple[Item, ...] = ()
    deal: tuple[Redeal, ...] = ()

    @classmethod
    def start(cls, epoch: int) -> ReaderState:
        return cls(epoch=int(epoch))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ReaderState:
        doc = json.loads(text)
        if not isinstance(doc, dict) or "epoch" not in doc:
            raise StateMismatchError("not a reader state")
        if "fingerprint" in doc and "dataset" not in doc:
            raise StateMismatchError("a state saved by an older fleetmine_reader: start the epoch again")
        try:
            st = cls(
                epoch=int(doc["epoch"]),
                shard=int(doc.get("shard", 0)),
                offset=int(doc.get("offset", 0)),
                split=None if doc.get("split") is None else int(doc["split"]),
                splits=None if doc.get("splits") is None else int(doc["splits"]),
                dataset=doc.get("dataset"),
                skipped=_items(doc.get("skipped", ())),
                deal=tuple(
                    Redeal(int(d["splits"]), _items(d["at"]), _items(d.get("skipped", ())))
                    for d in doc.get("deal", ())
                ),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise StateMismatchError(f"a malformed reader state: {type(exc).__name__}") from None
        st._check()
        return st

    def _check(self) -> None:
        """What a state's own numbers must satisfy (the rest is checked against the
        manifest when a reader binds it): a saved state is outside input too."""
        numbers = [self.epoch, self.shard, self.offset, *(x for item in self.skipped for x in item)]
        bound = self.split is not None or self.splits is not None
        if bound and (self.split is None or self.splits is None or not 0 <= self.split < self.splits):
            raise StateMismatchError("a state's split must be one of its splits")
        for layer in self.deal:
            if not layer.splits == len(layer.at) > 0:
                raise StateMismatchError("a resize layer lists one (shard, offset) per split")
            numbers += [x for item in (*layer.at, *layer.skipped) for x in item]
        if any(n < 0 for n in numbers):
            raise StateMismatchError("a state's numbers are never negative")

    @property
    def all_skipped(self) -> tuple[Item, ...]:
        """Every shard skipped in this epoch by this split and, before the resizes, by
        the splits whose work it took over (the union over a job's final states is the
        epoch's)."""
        out = set(self.skipped)
        for layer in self.deal:
            out.update(layer.skipped)
        return tuple(sorted(out))

    @classmethod
    def resize(cls, states: Sequence[ReaderState]) -> ReaderState:
        """The state that resumes the epoch at any world size, from the states of all
        splits saved at one point (one per ``(rank, worker)``: a split that yielded
        nothing gives the state it was started from, bound: :meth:`ShardReader.bind`).
        Every reader of the new size starts from the returned state; together they read
        exactly the samples the old splits had not."""
        if not states:
            raise StateMismatchError("resize needs the states of all splits")
        first = states[0]
        if first.splits is None or any(s.split is None for s in states):
            raise StateMismatchError("resize needs states bound to their splits (ShardReader.bind)")
        key = (first.epoch, first.dataset, first.splits, first.deal)
        for s in states:
            if (s.epoch, s.dataset, s.splits, s.deal) != key:
                raise StateMismatchError("resize needs states of one epoch, dataset, world size and deal")
        got = sorted(int(s.split) for s in states if s.split is not None)
        if got != list(range(first.splits)):
            missing = sorted(set(range(first.splits)) - set(got))[:10]
            twice = sorted({g for g in got if got.count(g) > 1})[:10]
            raise StateMismatchError(
                f"resize needs exactly one state per split 0..{first.splits - 1}: "
                f"missing {missing}, repeated {twice}"
            )
        ordered = sorted(states, key=lambda s: int(s.split or 0))
        layer = Redeal(
            first.splits,
            tuple((s.shard, s.offset) for s in ordered),
            tuple(sorted({x for s in ordered for x in s.skipped})),
        )
        return cls(epoch=first.epoch, dataset=first.dataset, deal=(*first.deal, layer))

    def bound(self, split: int, splits: int, dataset: str) -> ReaderState:
        return replace(self, split=split, splits=splits, dataset=dataset)


def _items(raw: Any) -> tuple[Item, ...]:
    return tuple((int(a), int(b)) for a, b in raw)


class Work(Protocol):
    """A split's items, lazily."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Item: ...


class _Dealt:
    """Every ``step``-th item of ``base`` from ``first``: one split of a round-robin deal."""

    def __init__(self, base: np.ndarray | Work, first: int, step: int):
        self.base, self.first, self.step = base, first, step
        self.n = len(range(first, len(base), step))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Item:
        if not 0 <= i < self.n:
            raise IndexError(i)
        k = self.first + i * self.step
        if isinstance(self.base, np.ndarray):
            return int(self.base[k]), 0
        return self.base[k]


class _Rest:
    """What the old splits had left at a resize, concatenated in split order."""

    def __init__(self, parts: list[Work], at: tuple[Item, ...]):
        if len(parts) != len(at):
            raise StateMismatchError(f"a resize of {len(at)} splits over a deal of {len(parts)}")
        self.parts, self.at = parts, at
        self.ends: list[int] = []
        total = 0
        for part, (pos, offset) in zip(parts, at, strict=True):
            if not 0 <= pos <= len(part) or offset < 0:
                raise StateMismatchError(f"a resize state at item {pos} of a split that has {len(part)}")
            total += len(part) - pos
            self.ends.append(total)

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, g: int) -> Item:
        if not 0 <= g < len(self):
            raise IndexError(g)
        t = bisect.bisect_right(self.ends, g)
        pos, offset = self.at[t]
        i = pos + g - (self.ends[t - 1] if t else 0)
        shard, start = self.parts[t][i]
        return (shard, max(start, offset)) if i == pos else (shard, start)


def work(order: np.ndarray, deal: tuple[Redeal, ...], split: int, splits: int) -> Work:
    """Split ``split`` of ``splits``'s items in an epoch whose shuffled shard order is
    ``order`` and whose resizes are ``deal``."""
    sizes = [layer.splits for layer in deal] + [splits]
    level: list[Work] = [_Dealt(order, t, sizes[0]) for t in range(sizes[0])]
    for layer, after in zip(deal, sizes[1:], strict=True):
        rest = _Rest(level, layer.at)
        level = [_Dealt(rest, t, after) for t in range(after)]
    return level[split]
