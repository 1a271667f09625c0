"""The lake's errors."""

from __future__ import annotations

from totesys_assets.resources.errors import ConfigurationFailure


class LakeError(RuntimeError):
    """A lake object could not be read, written or decoded (the message names it)."""


class LakeAccessError(ConfigurationFailure, LakeError):
    """The bucket is missing or the credentials are refused: fails at once, without retries."""


class LakeConflict(LakeError):
    """A conditional write lost: the object is no longer the one that was read (or now exists)."""
