"""openpilot recordings (comma devices): their logs read through a subset of cereal's schema.

:mod:`ingest.openpilot.logs` opens an rlog or qlog (plain, ``.bz2`` or ``.zst``) and
walks its events; the CAN reader :class:`ingest.can.openpilot_rlog.OpenpilotLogReader`
takes the ``can`` events of one.
"""
