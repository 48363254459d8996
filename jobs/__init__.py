"""Jobs: the ``fleetmine`` CLI, the runners, job composition, benchmarks.

- ``runner.py``: :class:`~jobs.runner.SequentialRunner` (this process) and
  :class:`~jobs.runner.RayRunner` (Ray tasks with the stage's resources, the stage
  set up once per worker, dead workers retried, per-item errors as data). Stages
  live in ``ingest/`` and ``mining/`` (``DriveIngest``, ``EmbedStage``,
  ``MineStage``, ``ShardStage``) and import nothing from here.
- ``<kind>_job.py``: a job composes stages: it plans the items, maps them through a
  runner, commits what the workers wrote in one ``txn``-tagged commit and records
  its ``runs`` row (``runs.py``).
- ``requests.py``: one typed request per job kind (``IngestJob``, ``EmbedJob``, ...),
  the union that the CLI and ``POST /v1/jobs`` share, and ``execute``.
- ``cli/``: the command line, one module per command group.

A new job kind: its stage beside the code it runs (``mining/`` or ``ingest/``), a
``jobs/<kind>_job.py``, a request model and a case in ``jobs.requests.execute``.
"""
