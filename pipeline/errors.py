"""Errors the CLI turns into one clear line and a non-zero exit code."""

from __future__ import annotations

import unicodedata

# Characters that would break or hide a line: controls (newlines too), format characters, line and
# paragraph separators, lone surrogates.
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def printable(value: object) -> str:
    """``str(value)`` for a report line or an error message: hidden characters as escapes (``\\n``)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   if unicodedata.category(c) in _HIDDEN else c for c in text)


class FdposeError(Exception):
    """Bad input or an unusable state, detected where it happens.

    The message names the file, the item and the reason; the CLI prints it as one line
    (``error: <message>``) and exits with :attr:`exit_code`.
    """

    exit_code = 1

    def __init__(self, message: str, *, path: object | None = None, item: object | None = None):
        parts = []  # names from the input may hold any character: escaped, so the line stays one line
        if path is not None:
            parts.append(printable(path))
        if item is not None:
            parts.append(printable(item))
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path = path
        self.item = item
