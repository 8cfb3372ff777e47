"""A local dataset made ready for `POST /v1/files`: an archive file on disk.

An archive (.zip, .tar, .tar.gz, .tgz) is sent as it is, if it is a regular file
(not a link) whose first bytes are those of its format. A directory is packed
into a zip file next to the database, one file at a time, so memory stays flat
whatever the dataset's size; the upload then streams that file. Left out, and
listed with the reason, are: dot-files and dot-directories (.git, .env, ...),
key and certificate files (they may hold credentials), symbolic links that lead
outside the directory, links to directories, and anything that is not a regular
file; an unreadable file or folder is listed too. Images are stored without
compression, as they are compressed already. Neither may be or hold one of the
daemon's own folders (its database, keys and outputs), and the packed archive is
capped at `limits.DATASET_MAX_BYTES`.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from daemon import limits

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
_KEY_SUFFIXES = (
    ".pem",
    ".key",
    ".crt",
    ".cer",
    ".der",
    ".p12",
    ".pfx",
    ".jks",
    ".keystore",
    ".ppk",
    ".gpg",
    ".asc",
)
_KEY_NAMES = ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "credentials")


class DatasetError(ValueError):
    """The dataset cannot be sent; str() says why."""


@dataclass(frozen=True)
class Skipped:
    path: str  # relative to the dataset directory
    reason: str


@dataclass(frozen=True)
class Packed:
    path: Path  # the archive to upload
    name: str  # its file name at Replicate
    temporary: bool  # packed by us: remove after the upload
    files: int  # files in it (0: an archive given as it is)
    skipped: tuple[Skipped, ...]


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def check_source(path: Path, private: tuple[Path, ...] = ()) -> None:
    """Refuse what can never be sent, before anything is recorded. `private`:
    the daemon's own folders, which a dataset may neither be in nor hold."""
    if not path.is_absolute():
        raise DatasetError(f"dataset: not an absolute path: {path!r}")
    try:
        mode = path.lstat().st_mode
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise DatasetError(f"dataset: {path!r}: {_why(exc)}") from None
    for folder in private:
        mine = folder.resolve()
        if real.is_relative_to(mine) or mine.is_relative_to(real):
            raise DatasetError(
                f"dataset: {path!r} overlaps the daemon's own folder {str(folder)!r}"
            )
    if stat.S_ISDIR(real.stat().st_mode):
        if not os.access(real, os.R_OK | os.X_OK):
            raise DatasetError(f"dataset: {path!r}: permission denied")
        return
    _check_archive(path, mode)


def _check_archive(path: Path, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise DatasetError(f"dataset: {path!r} is a link; give the archive itself")
    if not stat.S_ISREG(mode):
        raise DatasetError(f"dataset: {path!r} is not a regular file or a directory")
    if not is_archive(path):
        raise DatasetError(
            f"dataset: {path.name!r} is neither a directory nor an archive "
            f"({', '.join(ARCHIVE_SUFFIXES)})"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(_MAGIC_BYTES)
    except OSError as exc:
        raise DatasetError(f"dataset: {path!r}: {_why(exc)}") from None
    if not _looks_like_archive(path.name.lower(), head):
        raise DatasetError(f"dataset: {path.name!r} does not hold that kind of archive")
    if path.stat().st_size > limits.DATASET_MAX_BYTES:
        raise DatasetError(f"dataset: {path.name!r} is over {_cap()}")


_MAGIC_BYTES = 262


def _looks_like_archive(name: str, head: bytes) -> bool:
    if name.endswith(".zip"):
        return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")
    if name.endswith((".tar.gz", ".tgz")):
        return head[:2] == b"\x1f\x8b"
    return head[257:262] == b"ustar"


def _why(exc: BaseException) -> str:
    if isinstance(exc, RuntimeError):
        return "a link loop"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def _cap() -> str:
    return f"{limits.DATASET_MAX_BYTES >> 30} GiB"


def prepare(
    source: Path, work_dir: Path, stem: str, private: tuple[Path, ...] = ()
) -> Packed:
    """The archive for `source` (blocking: run it in a thread)."""
    check_source(source, private)
    if not source.is_dir():
        return Packed(source, source.name, False, 0, ())
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / f"{stem}.zip"
    skipped: list[Skipped] = []
    count = 0
    try:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for path, relative in _walk(source.resolve(), skipped):
                zf.write(path, relative)
                count += 1
                if target.stat().st_size > limits.DATASET_MAX_BYTES:
                    raise DatasetError(
                        f"dataset: {str(source)!r} packs to over {_cap()}"
                    )
    except OSError as exc:
        target.unlink(missing_ok=True)
        where = exc.filename or source
        raise DatasetError(f"dataset: {str(where)!r}: {_why(exc)}") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if count == 0:
        target.unlink(missing_ok=True)
        raise DatasetError(f"dataset: {source} holds no file that can be sent")
    return Packed(
        target, f"{source.name or 'dataset'}.zip", True, count, tuple(skipped)
    )


def _walk(root: Path, skipped: list[Skipped]) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in sorted(dirs):
            reason = _dir_reason(base / name, name)
            if reason:
                skipped.append(Skipped(_relative(base / name, root), reason))
        dirs[:] = sorted(d for d in dirs if not _dir_reason(base / d, d))
        for name in sorted(files):
            path = base / name
            relative = _relative(path, root)
            reason = _file_reason(path, name, root)
            if reason:
                skipped.append(Skipped(relative, reason))
            else:
                found.append((path, relative))
    return found


def _dir_reason(path: Path, name: str) -> str:
    if name.startswith("."):
        return "hidden directory"
    if path.is_symlink():
        return "link to a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return "not readable"
    return ""


def _file_reason(path: Path, name: str, root: Path) -> str:
    lowered = name.lower()
    if name.startswith("."):
        return "hidden file"
    if lowered.endswith(_KEY_SUFFIXES) or lowered.startswith(_KEY_NAMES):
        return "key or certificate file"
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return "broken link or a link loop"
        if not target.is_relative_to(root):
            return "link leading outside the dataset"
    try:
        mode = path.stat().st_mode
    except OSError:
        return "broken link or unreadable"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable"
    return ""


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
