"""Errors the CLI turns into one clear line and a non-zero exit code."""

from __future__ import annotations


class FdposeError(Exception):
    """Bad input or an unusable state, detected where it happens.

    The message names the file, the item and the reason; the CLI prints it as one line
    (``error: <message>``) and exits with :attr:`exit_code`.
    """

    exit_code = 1

    def __init__(self, message: str, *, path: object | None = None, item: object | None = None):
        parts = []
        if path is not None:
            parts.append(str(path))
        if item is not None:
            parts.append(str(item))
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path = path
        self.item = item
