"""Jobs: the runners, job composition, job kinds and their submission.

- ``runner.py``: :class:`~jobs.runner.SequentialRunner` (this process) and
  :class:`~jobs.runner.RayRunner` (Ray tasks with the stage's resources, the stage
  set up once per worker, dead workers retried, per-item errors as data). Stages
  live in ``ingest/`` and ``mining/`` (``DriveIngest``, ``EmbedStage``,
  ``MineStage``, ``ShardStage``) and import nothing from here.
- ``<kind>_job.py``: one job kind: its request model (``IngestJob``, ``EmbedJob``, ...)
  and ``run_job``. A job composes stages: it plans the items, maps them through a
  runner, commits what the workers wrote in one ``txn``-tagged commit and records
  its ``runs`` row (``runs.py``).
- ``requests.py``: the registry of job kinds (``KINDS``), from which the request union
  that the CLI, ``POST /v1/jobs`` and the scheduler share, ``parse_job`` and
  ``execute`` are derived; ``params.py``: what every request model shares.
- ``submit.py``: the one entry that starts a job outside its caller (a run id, the
  local job limit, a log, its ``runs`` row); ``scheduler.py``: recurring chains.

A new job kind: its stage beside the code it runs (``mining/`` or ``ingest/``), a
``jobs/<kind>_job.py`` (request model and ``run_job``) and its line in
``jobs.requests.KINDS``.
"""
