"""Atomic writes (build into a temporary sibling, then rename into place) and content hashes.

A failed or interrupted run never leaves a half-written output, and the previous output stays
untouched until the new one is complete. :func:`sha256_file` and :func:`files_fingerprint` name file
contents: weights in metrics and model cards, a dataset split in eval results.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import FdposeError

# What a write that fails half way raises: a full disk or quota, a file size limit, a read-only
# filesystem. Only writes raise these, so they name the output, never an input.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


# How torch's checkpoint writer reports a failed write (a RuntimeError from C++, the errno lost).
_TORCH_WRITE_FAILURES = ("iostream error", "file write failed")
# How SQLite reports one (DVC's state database, which DVCLive opens during training).
_SQLITE_WRITE_FAILURES = ("disk I/O error", "database or disk is full")


def _write_failure_reason(error: BaseException | None) -> str | None:
    """The reason when ``error`` (or one it was raised from or during) is a failed write, else None."""
    seen = 0
    while error is not None and seen < 8 and not isinstance(error, FdposeError):  # that one is explained
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return error.strerror or os.strerror(error.errno)
        if isinstance(error, RuntimeError) and any(text in str(error) for text in _TORCH_WRITE_FAILURES):
            return f"a write failed: {str(error).splitlines()[0][:120]}"
        if isinstance(error, sqlite3.OperationalError) and any(text in str(error)
                                                               for text in _SQLITE_WRITE_FAILURES):
            return f"a database write failed: {str(error)[:120]}"
        chained = None if error.__suppress_context__ else error.__context__
        error, seen = error.__cause__ or chained, seen + 1
    return None


def is_write_failure(error: BaseException) -> bool:
    return _write_failure_reason(error) is not None


def write_failure(error: BaseException, target: object, unchanged: str = "any previous output is unchanged"
                  ) -> FdposeError:
    """A failed write of ``target`` as one error line; the caller has removed what it had written."""
    return FdposeError(f"could not write ({_write_failure_reason(error)}); {unchanged}", path=target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    # mkdtemp creates 0700; the result should have the permissions any other folder would have.
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(error):
            raise write_failure(error, target) from None
        raise
    replace_dir(tmp, target)


def replace_dir(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the folder ``source`` to ``target``; an existing ``target`` is removed only once
    ``source`` is in its place."""
    source, target = Path(source), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def stage_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a new temporary sibling of ``path`` (mode as any new file) and return it; the
    caller renames it into place (``os.replace``). A failed write leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_write_failure(error):
            raise write_failure(error, path) from None
        raise
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary sibling of ``path`` and rename it into place."""
    os.replace(stage_bytes(path, data), path)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Deterministic JSON (sorted keys, fixed separators, trailing newline), written atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_fingerprint(rows: Iterable[tuple[str, list[Path]]]) -> str:
    """sha256 over one ``name, hash of each file`` line per row (tab-separated, rows in name order; a
    file that does not exist hashes as ``-``), so renaming, editing or removing any file changes it."""
    lines = []
    for name, paths in sorted(rows, key=lambda row: row[0]):
        hashes = [sha256_file(path) if path.exists() else "-" for path in paths]
        lines.append("\t".join([name, *hashes]) + "\n")
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def yaml_error_reason(error: Exception) -> str:
    """A YAML parse error in one line: what went wrong and where (PyYAML's own text spans lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1} column {mark.column + 1}"
    return " ".join(str(error).split())


def read_yaml_mapping(path: str | os.PathLike, what: str, *, expected: str = "a mapping") -> dict[Any, Any]:
    """The mapping a YAML (or JSON) file holds, read as UTF-8 with or without a byte-order mark.

    A missing, unreadable or invalid file, or one that holds anything but a mapping, is one
    :class:`FdposeError` naming it (``"{what} not found"``, ``"invalid YAML (...)"``,
    ``"expected {expected}"``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FdposeError(f"{what} not found", path=path) from None
    except IsADirectoryError:
        raise FdposeError(f"is a directory, expected a {what}", path=path) from None
    except UnicodeDecodeError as error:
        raise FdposeError(f"not UTF-8 text ({error.reason} at byte {error.start})", path=path) from None
    except OSError as error:
        raise FdposeError(f"unreadable {what} ({error.strerror})", path=path) from None
    except ValueError as error:  # a NUL in the name
        raise FdposeError(f"unusable file name ({error})", path=path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FdposeError(f"invalid YAML ({yaml_error_reason(error)})", path=path) from None
    except (ValueError, TypeError, RecursionError) as error:  # e.g. a date like 2024-02-30
        raise FdposeError(f"invalid YAML value ({error})", path=path) from None
    if not isinstance(data, dict):
        raise FdposeError(f"expected {expected}", path=path)
    return check_unicode(data, path)


def check_unicode(data: Any, source: object) -> Any:
    """``data`` (parsed JSON or YAML), unless one of its strings holds a lone UTF-16 surrogate (an
    escape like ``\\ud800`` in the file): such text cannot be written back out, so it is refused here."""
    try:
        json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as error:
        character = ord(error.object[error.start])
        raise FdposeError(f"a string holds a lone UTF-16 surrogate (\\u{character:04x}), not Unicode text",
                          path=source) from None
    except (ValueError, TypeError, RecursionError):  # not JSON-like (YAML dates, sets...): nothing to check
        pass
    return data


def parse_json(raw: bytes, source: object) -> Any:
    """Parse JSON bytes (UTF-8, with or without a byte-order mark); invalid, truncated or too deeply
    nested JSON is one :class:`FdposeError` naming ``source``."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:  # a faster parser where installed (dvc brings it); the standard library's otherwise
        import orjson

        return orjson.loads(raw)
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    except orjson.JSONDecodeError:
        pass  # NaN literals, huge integers or a real error: the standard parser decides and explains
    try:  # orjson refuses lone surrogates; the standard parser accepts them, so they are checked
        return check_unicode(json.loads(raw), source)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise FdposeError(f"invalid or truncated JSON ({error.msg} at {where})", path=source) from None
    except UnicodeDecodeError as error:
        raise FdposeError(f"not UTF-8 text ({error.reason} at byte {error.start})", path=source) from None
    except RecursionError:
        raise FdposeError("invalid JSON (nested too deeply)", path=source) from None
    except ValueError as error:  # an integer of more digits than Python converts (4300 by default)
        raise FdposeError(f"invalid JSON number ({' '.join(str(error).split()[:10])})", path=source) from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """:func:`parse_json` of a file; a missing or unreadable file is one :class:`FdposeError` naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FdposeError(f"{what} not found", path=path) from None
    except IsADirectoryError:
        raise FdposeError("is a directory, expected a JSON file", path=path) from None
    except OSError as error:
        raise FdposeError(f"unreadable {what} ({error.strerror})", path=path) from None
    except ValueError as error:  # a NUL in the name
        raise FdposeError(f"unusable file name ({error})", path=path) from None
    return parse_json(raw, path)
