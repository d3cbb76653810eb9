"""Writing a file so that it is either complete under its name or not there at all.

The bytes go to a hidden temporary file in the target's folder (same file system), are flushed to disk, and the file
is then moved into place in one step: ``os.replace`` when replacing is allowed, otherwise an exclusive creation (a
hard link, which fails if the name exists; ``os.rename`` on Windows, which does the same), so a file that appeared
since the plan was made is never replaced. On any failure the temporary file is removed and ``OutputWriteError``
names the file and the cause ("disk full", "permission denied", ...).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from ..errors import OutputExistsError, OutputWriteError

CHUNK = 1 << 20  # bytes per write call

_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


def describe_os_error(exc: OSError) -> str:
    """A short cause for ``exc``: "disk full", "permission denied", or the system's own text."""
    return _CAUSES.get(exc.errno, exc.strerror or str(exc) or type(exc).__name__)


def _write_chunk(fd: int, chunk: memoryview) -> int:
    """One ``os.write`` (a seam for tests that simulate a full disk)."""
    return os.write(fd, chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = _write_chunk(fd, view[:CHUNK])
        view = view[written:]


def _link_exclusively(temp: Path, path: Path) -> None:
    """Give ``temp`` the name ``path`` only if ``path`` does not exist (``FileExistsError`` otherwise)."""
    if os.name == "nt":
        os.rename(temp, path)  # fails when path exists
        return
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError as exc:  # a file system without hard links (FAT, some network shares)
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from exc
        os.replace(temp, path)
        return
    temp.unlink()


def write_atomically(path: str | Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` (its folder created if needed) so that ``path`` is either the complete new file or
    untouched. ``overwrite=False``: an existing ``path`` raises ``OutputExistsError`` and stays as it is.
    Raises ``OutputWriteError`` (naming ``path`` and the cause) when the file cannot be written."""
    path = Path(path)
    temp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        temp = Path(name)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temp, path)
        else:
            try:
                _link_exclusively(temp, path)
            except FileExistsError as exc:
                raise OutputExistsError(f"{path} already exists (it appeared while this run was working); it was "
                                        f"kept as it is") from exc
        temp = None
    except OutputExistsError:
        raise
    except OSError as exc:
        raise OutputWriteError(f"could not write {path}: {describe_os_error(exc)}") from exc
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
