"""A package's integrity: ``SHA256SUMS`` over every file, the reproducible zip, and their verification.

The archive is reproducible: entries sorted, timestamps fixed at 1980-01-01, permissions 0644, so the
same files give a byte-identical zip. :func:`verify` checks a package folder or its zip against its
``SHA256SUMS`` and names every mismatched, missing or unlisted file (``fdpose package verify``).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import FdposeError
from pipeline.io import sha256_file

CHECKSUMS = "SHA256SUMS"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold: no build time leaks in


def package_files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and p.name != CHECKSUMS)


def write_checksums(directory: Path) -> Path:
    """``SHA256SUMS`` for every file in ``directory`` (sorted; ``sha256sum -c`` compatible)."""
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in package_files(directory)]
    path = directory / CHECKSUMS
    path.write_text("".join(lines), encoding="utf-8")
    return path


def archive_bytes(directory: Path, root_name: str) -> bytes:
    """A reproducible zip of ``directory`` under ``root_name/``: sorted, fixed dates and permissions."""
    buffer = io.BytesIO()
    names = package_files(directory) + [CHECKSUMS]
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(names):
            info = zipfile.ZipInfo(f"{root_name}/{name}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so external_attr below means mode bits everywhere
            info.external_attr = 0o100644 << 16
            archive.writestr(info, (directory / name).read_bytes(), compresslevel=9)
    return buffer.getvalue()


@dataclass
class VerifyResult:
    """Checksum verification of a package directory or archive."""

    path: Path
    checked: list[str]
    mismatched: list[str]
    missing: list[str]
    unlisted: list[str]

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.unlisted)

    def summary(self) -> str:
        if self.ok:
            return f"OK: {len(self.checked)} files match {CHECKSUMS} in {self.path}"
        parts = [f"{label}: {', '.join(names)}" for label, names in
                 (("checksum mismatch", self.mismatched), ("missing", self.missing),
                  ("not in " + CHECKSUMS, self.unlisted)) if names]
        return "; ".join(parts)


def verify(path: str | Path) -> VerifyResult:
    """Check every file of a package directory (or its ``.zip``) against its ``SHA256SUMS``.

    Returns the result; raises :class:`FdposeError` (one line naming the bad files) when anything
    differs, is missing, or is present without a checksum.
    """
    path = Path(path)
    if path.is_dir():
        files = {name: (path / name).read_bytes() for name in package_files(path)}
        sums_path = path / CHECKSUMS
        sums_text = sums_path.read_text(encoding="utf-8") if sums_path.is_file() else None
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            entries = {info.filename.split("/", 1)[1]: archive.read(info) for info in archive.infolist()
                       if "/" in info.filename and not info.is_dir()}
        sums_text = entries.pop(CHECKSUMS).decode("utf-8") if CHECKSUMS in entries else None
        files = entries
    else:
        raise FdposeError("not a package directory or zip archive", path=path)
    if sums_text is None:
        raise FdposeError(f"no {CHECKSUMS}", path=path)
    expected: dict[str, str] = {}
    for number, line in enumerate(sums_text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise FdposeError("malformed line", path=path / CHECKSUMS if path.is_dir() else path,
                              item=f"line {number}")
        expected[name] = digest
    checked, mismatched, missing = [], [], []
    for name, digest in sorted(expected.items()):
        if name not in files:
            missing.append(name)
        elif hashlib.sha256(files[name]).hexdigest() != digest:
            mismatched.append(name)
        else:
            checked.append(name)
    result = VerifyResult(path, checked, mismatched, missing, sorted(set(files) - set(expected)))
    if not result.ok:
        raise FdposeError(result.summary(), path=path)
    return result

