"""What one drive's ingest dropped, and why it failed if it did: the drive row's words.

Every step of a drive (:mod:`ingest.drive`) writes into one :class:`Notes`; they become
``drives.warnings``, ``drives.error``, ``retryable`` and ``skipped_lines``. A failure on
one file is a warning here, never an exception (a bad file is data).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Notes"]


@dataclass
class Notes:
    """What one drive's ingest dropped (warnings) and, if it has to fail, why (reasons)."""

    warnings: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    transient: bool = False  # an I/O error: a re-run may succeed
    skipped_lines: int = 0

    def warn(self, message: str, *, transient: bool = False) -> None:
        self.warnings.append(message)
        self.transient = self.transient or transient

    def fail(self, message: str) -> None:
        self.reasons.append(message)
