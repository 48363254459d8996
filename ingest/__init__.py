"""Decoding fleet uploads: drive discovery, video, CAN logs, DBC decoding, clips, events.

Not built yet: see the ingest issue.
"""
