"""Errors raised at pfdist's boundaries: each says what was wrong and what to do."""

from __future__ import annotations


class PFDistWarning(UserWarning):
    """Something the user asked for was not done, and why (e.g. an output that cannot be cached)."""


class PFDistError(ValueError):
    """Bad input or state detected by pfdist; the message names the fix."""


class NonFiniteError(PFDistError):
    """A model produced NaN or Inf."""


class CheckpointError(PFDistError):
    """A checkpoint is missing, corrupt, or does not match the requested config."""


class DistributedError(PFDistError):
    """Another rank of a torch.distributed process group failed; the message is that rank's error."""
