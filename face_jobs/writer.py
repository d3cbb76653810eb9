"""Writing a file so that it is either complete under its name or not there at all.

The bytes go to a hidden temporary file in the target's folder (same file system), are flushed to disk, and the file
is then moved into place in one step: ``os.replace`` when replacing is allowed, otherwise an exclusive creation (a
hard link, which fails if the name exists; ``os.rename`` on Windows, which does the same), so a file that appeared
since the plan was made is never replaced. On any failure the temporary file is removed and ``OutputWriteError``
names the file and the cause ("disk full", "permission denied", ...). The file gets the mode any program's new file
gets, ``0o666`` less the umask (``mkstemp`` makes it ``0o600``); the umask is read once (``process_umask``).

A process killed while writing (SIGKILL, a power cut) leaves its temporary file, ``.NAME.XXXXXXXX.part``, behind;
``remove_stale_parts`` removes those of a folder that no live run writes into (the output lock says so: ``lock``).

A folder whose output lock this process holds (``lock.OutputLock``) is written into only while its lock file is
there: a write under a folder whose lock file was removed (the folder deleted mid-run, say) stops the run with
``OutputLockedError`` instead of creating the folder again without a lock (``held_locks`` registers them).

A ``PendingWrite`` is a file to write, held as data: an engine whose workers compute in other processes (Ray) has
them return their ``PendingWrite`` records and writes them where the run's lock is held, with this same writer.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from face_pipeline.errors import OutputExistsError, OutputLockedError, OutputWriteError
from face_pipeline.image import encode_image

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per write call

#: the output lock files this process holds (resolved paths), registered by ``lock.OutputLock`` under ``HELD_GUARD``
HELD_LOCKS: set[Path] = set()
HELD_GUARD = threading.Lock()


def check_lock_of(path: Path) -> None:
    """``OutputLockedError`` when ``path`` lies in a folder whose output lock this process holds but whose lock file
    is gone (the folder, or the lock, deleted while the run was writing): nothing more is written there."""
    with HELD_GUARD:
        held = list(HELD_LOCKS)
    if not held:
        return
    target = path.resolve()
    for lock_file in held:
        if target.is_relative_to(lock_file.parent) and not lock_file.is_file():
            raise OutputLockedError(f"{lock_file.parent} or its lock file {lock_file.name} was removed while this run "
                                    f"was writing into it: stopped, so that nothing is written into a folder without "
                                    f"its lock; run the command again to write the rest")

_CAUSES = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


#: the temporary files ``write_atomically`` makes: ``mkstemp``'s eight random characters between the name and .part
PART_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")
_UMASK_LOCK = threading.Lock()
NAME_MAX = 255  # bytes of one file name on Linux, macOS and Windows file systems (ext4, APFS, NTFS: 255 units)
_PART_EXTRA = len(".") + 8 + len(".part") + len(".")  # what a temporary name adds to the name it stands for


def part_prefix(name: str) -> str:
    """``mkstemp``'s prefix for a temporary file standing for ``name``: ``.NAME.``, with ``NAME`` cut so that the
    temporary name fits ``NAME_MAX`` bytes whenever ``name`` does (a UTF-8 name is cut at a character boundary)."""
    encoded = os.fsencode(name)
    room = NAME_MAX - _PART_EXTRA
    if len(encoded) > room:
        cut = encoded[:room]
        try:  # drop a character cut in two
            cut = cut.decode("utf-8", "ignore").encode("utf-8") if encoded.decode("utf-8") else cut
        except UnicodeDecodeError:  # not UTF-8 (a name of raw bytes): bytes are what the file system counts
            pass
        name = os.fsdecode(cut)
    return f".{name}."


@functools.cache
def process_umask() -> int:
    """The process's umask, read once: from /proc/self/status where Linux has it (nothing is changed), else by
    setting and restoring it under a lock, which a program should do at its start, before other threads create
    files (the command line calls this before any work)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _give_umask_mode(fd: int, name: str) -> None:
    """``mkstemp`` creates its file ``0o600``; an output gets ``0o666`` less the umask, as ``open`` would give it."""
    mode = 0o666 & ~process_umask()
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    elif os.name != "nt":  # Windows: only the read-only bit exists, and the file is writable already
        os.chmod(name, mode)


def remove_stale_parts(folder: str | Path, *, depth: int = 3, skip=lambda folder: False) -> list[Path]:
    """Remove the temporary files (``PART_PATTERN``) that writes killed midway left in ``folder`` and its subfolders
    down to ``depth`` levels (an output folder's layout: ``sub/``, ``crops/sub/``, ``annotated/sub/``), except in
    the folders ``skip(folder)`` says another live run writes into. Only for a folder whose writers are known to be
    dead (the caller holds its lock). Returns the files removed; a file that cannot be removed is left, logged."""
    removed: list[Path] = []
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                if depth > 0 and not skip(path):
                    removed += remove_stale_parts(path, depth=depth - 1, skip=skip)
            elif entry.is_file(follow_symlinks=False) and PART_PATTERN.match(entry.name):
                path.unlink()
                removed.append(path)
        except OSError as exc:
            logger.warning("could not remove the unfinished file %s: %s", path, describe_os_error(exc))
    return removed


def describe_os_error(exc: OSError) -> str:
    """A short cause for ``exc``: "disk full", "permission denied", or the system's own text."""
    cause = _CAUSES.get(exc.errno) if exc.errno is not None else None
    return cause or exc.strerror or str(exc) or type(exc).__name__


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
    untouched. ``overwrite=False``: an existing ``path`` raises ``OutputExistsError`` and stays as it is; a ``path``
    under a held output lock whose lock file is gone raises ``OutputLockedError`` (``check_lock_of``).
    Raises ``OutputWriteError`` (naming ``path`` and the cause) when the file cannot be written."""
    path = Path(path)
    check_lock_of(path)
    temp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=part_prefix(path.name), suffix=".part", dir=path.parent)
        temp = Path(name)
        try:
            _give_umask_mode(fd, name)
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


@dataclass(frozen=True)
class PendingWrite:
    """One file to write: where, what, whether an existing file may be replaced, and whether an existing file is
    only a warning (``keep_existing``: e.g. a crop beside its image) instead of an ``OutputExistsError``."""

    path: Path
    data: bytes
    overwrite: bool = False
    keep_existing: bool = False

    def write(self) -> None:
        """``write_atomically`` this file (an existing one kept with a warning when ``keep_existing``)."""
        try:
            write_atomically(self.path, self.data, overwrite=self.overwrite)
        except OutputExistsError:
            if not self.keep_existing:
                raise
            logger.warning("kept the existing %s (--overwrite replaces it)", self.path)


def save_image(image: torch.Tensor, path: str | Path, *, alpha: torch.Tensor | None = None,
               exif: bytes | None = None, icc_profile: bytes | None = None, overwrite: bool = True) -> None:
    """Write ``image`` (see ``encode_image``; the suffix picks the format) to ``path`` atomically: a temporary file
    in the same folder (created if needed) renamed into place, so a failed write leaves nothing under ``path``.
    ``overwrite=False`` keeps an existing file (``OutputExistsError``); a failed write is ``OutputWriteError``."""
    path = Path(path)
    data = encode_image(image, path.suffix, alpha=alpha, exif=exif, icc_profile=icc_profile, name=path.name)
    write_atomically(path, data, overwrite=overwrite)
