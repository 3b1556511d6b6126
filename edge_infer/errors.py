"""The package's own exceptions: callers catch one type per failure family."""

from __future__ import annotations


class EdgeInferError(Exception):
    """Base class of every error this package raises on purpose."""


class ImageError(EdgeInferError):
    """An input could not be turned into an image; the message names the file and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ModelError(EdgeInferError):
    """A model file is missing, corrupt, or not one of ours (no metadata)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")
