"""The reader's exceptions::

ReaderError                the reader cannot go on (a malformed manifest, a refused token)
├── ShardFetchError        a shard that stayed unfetchable through every retry
│   └── ShardIntegrityError   its bytes are not the manifest's (size or digest)
└── StateMismatchError     a saved state of another manifest, seed, split or deal
"""

from __future__ import annotations


class ReaderError(Exception):
    """The reader cannot go on (a shard that cannot be fetched, a malformed manifest)."""


class ShardFetchError(ReaderError):
    """A shard that could not be fetched whole through every retry (or is gone: 404).
    With ``on_bad_shard="skip"`` it is skipped and recorded in the state instead."""


class ShardIntegrityError(ShardFetchError):
    """A shard's bytes do not have the size or sha256 the manifest lists."""


class StateMismatchError(ReaderError):
    """A saved state that belongs to another manifest, seed, split or deal."""
