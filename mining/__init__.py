"""Model registry, encoders, embedding job, FAISS indexes, novelty, dedup, curation.

Read :mod:`mining.interfaces` first: the encoder contract and the registry entry
(:class:`ModelSpec`). Then four rooms, each a package; a room imports only the rooms
below it (``tests/mining/test_rooms.py`` checks), and every room imports the contracts:

    datasets  -> scores -> search -> encoders -> interfaces

- ``encoders/``: the encoder kinds, the model registry (``registry.py``), the embed
  stage (``embed.py``), the stored vectors (``vectors.py``), the pretrained encoders;
- ``search/``: FAISS indexes, the live index a process serves, similar clips, query
  by image, the corner-case lists kept ready;
- ``scores/``: the ``mine`` stage (``mine.py``) and what it computes per clip (novelty,
  near duplicates, the fit), the current scores, reviews and the review grid, ``eval-mining``;
- ``datasets/``: dataset queries and versions, their members, WebDataset shards, LeRobot.

Where things go:

- an encoder kind: ``mining/encoders/<kind>.py`` (``setup()`` loads weights inside
  the worker; ``process_batch`` returns unit-norm float32 rows) with its ``KIND``
  (:class:`~mining.encoders.kinds.EncoderKind`: how to build it, its params model, whether
  a version names a model file, its resources, its vector layout), and that ``KIND`` in
  ``mining.encoders.KINDS``; nothing else names the kind. It freezes any vocabulary it
  reads (see ``mining/encoders/builtin.py``), so a registered version's vectors never change;
- a query over clips: a filter field on ``storage.filters.ClipFilter``, so the API
  and dataset curation read the same rows;
- a job step: a stage beside its code (``EmbedStage``, ``MineStage``, ``ShardStage``),
  run by ``jobs/runner.py`` and composed in ``jobs/<kind>_job.py``. Nothing here
  imports ``jobs`` or ``api``.

Importing ``mining`` loads the contracts only; FAISS, ONNX Runtime and WebDataset
load with the modules that use them.
"""

from mining.interfaces import ClipInput, Encoder, ModelSpec

__all__ = ["ClipInput", "Encoder", "ModelSpec"]
