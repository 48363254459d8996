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
disjoint samples whose union is the epoch. Each shard's sha256 is checked against the
manifest before any of its samples is handed out. A state is (epoch, shard, offset):
resuming from a sample's ``__state__`` yields exactly the samples after it.

Errors: :class:`ReaderError`, with :class:`ShardIntegrityError` (a shard's bytes are not
the manifest's) and :class:`StateMismatchError` (a state from another manifest, seed or split).
"""

from fleetmine_reader._reader import (
    ReaderConfig,
    ReaderError,
    ReaderState,
    ShardIntegrityError,
    ShardReader,
    StateMismatchError,
    decode_frames,
    load_manifest,
)

__all__ = [
    "ReaderConfig",
    "ReaderError",
    "ReaderState",
    "ShardIntegrityError",
    "ShardReader",
    "StateMismatchError",
    "decode_frames",
    "load_manifest",
]
