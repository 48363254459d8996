"""Model registry, encoders, embedding job, FAISS indexes, novelty, dedup, curation.

Read :mod:`mining.interfaces` first: the encoder contract and the registry entry
(:class:`ModelSpec`). Where things go:

- an encoder kind: ``mining/encoders/<kind>.py`` (``setup()`` loads weights inside
  the worker; ``process_batch`` returns unit-norm float32 rows), chosen by kind in
  ``mining.encoders.make_encoder``; it freezes any vocabulary it reads (see
  ``mining/encoders/builtin.py``), so a registered version's vectors never change;
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
