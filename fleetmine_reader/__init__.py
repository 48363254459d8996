"""The trainer's side of fleetmine: a deterministic, resumable reader of a dataset
version's manifest. It imports neither Ray nor any server code (nor deltalake): only
the standard library and NumPy, and PyAV when frames are asked for.

::

    from fleetmine_reader import ReaderConfig, ReaderState, ShardReader, load_manifest

    manifest = load_manifest(MANIFEST_URL, token=TOKEN)    # or a saved manifest.json
    reader = ShardReader(manifest, ReaderConfig(seed=0, rank=RANK, world_size=WORLD))
    state = ReaderState.start(epoch) if checkpoint is None else ReaderState.from_json(checkpoint)
    for sample in reader.iterate(state):
        train_step(sample["mp4"], sample["json"], sample["signals.npy"])
        checkpoint = sample["__state__"].to_json()          # saved with the model: resume here

An epoch visits every shard once, in an order drawn from ``(seed, epoch)``; shards are
dealt round-robin to ``world_size * num_workers`` splits, so ranks and workers see
disjoint samples whose union is the epoch. A split's list is computed, not stored: a
manifest of 10^6 shards costs one order array per epoch, not a copy per rank.

Fetching: ``prefetch`` shards ahead of the one being read are downloaded in threads,
spooled to ``cache_dir`` with their sha256 computed on the way in; a shard's samples are
handed out only once its whole file matched the manifest, so a sample of a corrupt shard
never reaches the trainer. A failed fetch (reset, 5xx, a body cut short, a stall past
``timeout_s``, a digest mismatch) is retried with backoff and resumed by ``Range``; a
refused grant fetches a fresh manifest through ``refresh``; a shard that stays bad fails
the reader or, with ``on_bad_shard="skip"``, is skipped and recorded in the state.

A state is (epoch, shard, offset) of a split: resuming from a sample's ``__state__``
yields exactly the samples after it. To resume at another world size, gather every
split's state and start all the new readers from ``ReaderState.resize(states)``: the
shards the old splits had left are dealt again, deterministically, and no sample of the
epoch is read twice or skipped::

    states = [ReaderState.from_json(s) for s in every_ranks_saved_states]  # rank x worker
    start = ReaderState.resize(states)                   # any new world size reads on from it
    reader = ShardReader(manifest, ReaderConfig(seed=0, rank=r, world_size=NEW_WORLD),
                         refresh=lambda: load_manifest(MANIFEST_URL, token=TOKEN))

Errors (:mod:`fleetmine_reader._errors` draws the tree): :class:`ReaderError`, with
:class:`ShardFetchError` (a shard that stayed unfetchable), :class:`ShardIntegrityError`
(its bytes are not the manifest's) and :class:`StateMismatchError` (a state from another
manifest, seed, split or deal).
"""

from fleetmine_reader._errors import (
    ReaderError,
    ShardFetchError,
    ShardIntegrityError,
    StateMismatchError,
)
from fleetmine_reader._reader import ReaderConfig, ShardReader, decode_frames, load_manifest
from fleetmine_reader._state import ReaderState, Redeal

__all__ = [
    "ReaderConfig",
    "ReaderError",
    "ReaderState",
    "Redeal",
    "ShardFetchError",
    "ShardIntegrityError",
    "ShardReader",
    "StateMismatchError",
    "decode_frames",
    "load_manifest",
]
