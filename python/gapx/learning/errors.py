"""Why a learning run stopped: one exception family, each message one line."""

from __future__ import annotations


class LearningError(RuntimeError):
    """A learning run stopped (oracle failure, MD blow-up, an inconsistent or occupied run
    folder): the message says why in one line; everything up to that point is kept."""


class OracleError(LearningError):
    """The oracle raised or returned non-finite values (after any retries)."""
