"""Decoding fleet uploads: drive discovery, video, CAN logs, DBC decoding, clips, events.

Read :mod:`ingest.interfaces` first: the CAN reader and stage contracts. Where
things go:

- a CAN log format: a reader in ``ingest/can/<format>.py`` (``suffixes`` and
  ``read(data, name) -> CanReadResult``, bad lines counted, never raised), one line in
  ``ingest.can.READERS`` (discovery's ``CAN_SUFFIXES`` and the reader lookup follow);
  ``tests/ingest/test_can_reader_contract.py`` runs the shared suite on it (give it a
  sample there) and ``docs/raw-layout.md`` names its suffix;
- a car: a platform map in ``ingest/platforms/`` (DBC + canonical signal map);
- a trigger: its name in ``storage.tables.clips.EVENTS``, its rule in ``ingest/features.py``;
- a new concern of one drive (a time source, a container): its own module behind a
  small function, composed by ``ingest/drive.py`` (:class:`~ingest.drive.DriveIngest`),
  reading the drive's files only through :class:`~ingest.drive_files.DriveFiles` (each
  read confined to the raw root) and writing its warnings into :class:`~ingest.notes.Notes`;
- a new pipeline step: a stage (``resources``, ``setup()``, ``process_batch``) here;
  ``jobs/runner.py`` runs it in-process or on Ray, and a ``jobs/<kind>_job.py``
  commits what it wrote. Nothing here imports ``jobs`` or ``api``.

Importing ``ingest`` loads the contracts only; PyAV, cantools and the readers load
with the modules that use them (python-can with the readers that need it:
:mod:`ingest._deferred`).
"""

from ingest._deferred import defer_cantools_tester
from ingest.interfaces import FRAME_SCHEMA, CanReader, CanReadResult, Stage

defer_cantools_tester()  # before any module of ingest imports cantools (the contracts do not)

__all__ = ["FRAME_SCHEMA", "CanReadResult", "CanReader", "Stage"]
