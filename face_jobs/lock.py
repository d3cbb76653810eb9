"""One run at a time per output folder: a lock file created exclusively, removed when the run ends.

The lock file (``.gpen-restore.lock`` in the output folder) holds the process id and host name of the run that owns
it. A second run into the same folder gets ``OutputLockedError`` naming the owner and the file. A lock left behind
by a run that no longer exists on this host (killed with SIGKILL, a crash) is taken over with a warning. A folder the
lock created is removed again on release if nothing was written into it.

Holding the lock means no live run writes into the folder, so the temporary files (``.NAME.XXXXXXXX.part``) found
there were left by runs killed midway: they are removed when the lock is taken (``writer.remove_stale_parts``),
except in a subfolder another live run holds the lock of, and not at all when a live run holds the lock of a folder
above (it may be writing here).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from face_pipeline.errors import OutputLockedError, OutputWriteError

from .writer import describe_os_error, remove_stale_parts

logger = logging.getLogger(__name__)

LOCK_NAME = ".gpen-restore.lock"
_HELD: set[Path] = set()  # the lock files this process holds (resolved paths)
_HELD_GUARD = threading.Lock()


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would end the process there: assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _read_owner(path: Path) -> tuple[int, str] | None:
    """The process id and host a lock file names; None while it is being written, or unreadable."""
    try:
        pid, host = path.read_text(encoding="utf-8").split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def _owner_alive(path: Path, owner: tuple[int, str]) -> bool:
    """Whether the run a readable lock file names may still run: on another host, assumed so; with this process's
    id, only if this process holds that lock (else it was left by an earlier process that had the same id, e.g. the
    previous run of a restarted container, where the run is often process 1); else whether that process lives."""
    pid, host = owner
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        with _HELD_GUARD:
            return path.resolve() in _HELD
    return _alive(pid)


def held_by_live_run(folder: Path) -> bool:
    """Whether ``folder`` holds a lock file of a run that may be alive (on another host, or unreadable: assumed so)."""
    path = folder / LOCK_NAME
    if not path.is_file():
        return False
    owner = _read_owner(path)
    return owner is None or _owner_alive(path, owner)


class OutputLock:
    """``with OutputLock(folder):`` holds ``folder``'s lock for the block (the folder is created if needed)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._held = False
        self._created_folder = False

    def _owner(self) -> tuple[int, str] | None:
        return _read_owner(self.path)  # None (being written, or unreadable): treated as held

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        return True

    def acquire(self) -> None:
        try:
            self._created_folder = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            created = self._create()
            if not created:
                owner = self._owner()
                if owner is not None and not _owner_alive(self.path, owner):
                    logger.warning("taking over %s, left by process %d which no longer runs", self.path, owner[0])
                    self.path.unlink(missing_ok=True)
                    created = self._create()
        except OSError as exc:
            raise OutputWriteError(f"could not create the lock file {self.path}: {describe_os_error(exc)}") from exc
        if not created:
            owner = self._owner()
            who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
            raise OutputLockedError(
                f"another run ({who}) is writing into {self.folder} (lock file {self.path}); wait for it to end, "
                f"or delete the lock file if no run is active")
        self._held = True
        with _HELD_GUARD:
            _HELD.add(self.path.resolve())
        self._remove_stale_parts()

    def _remove_stale_parts(self) -> None:
        """The unfinished files of dead runs (see the module doc)."""
        folder = self.folder.resolve()
        above = next((f for f in folder.parents if held_by_live_run(f)), None)
        if above is not None:
            logger.info("unfinished files in %s are left alone: a run holds the lock of %s", self.folder, above)
            return
        removed = remove_stale_parts(self.folder, skip=held_by_live_run)
        if removed:
            shown = ", ".join(str(p.relative_to(self.folder)) for p in removed[:5])
            shown += " ..." if len(removed) > 5 else ""
            logger.warning("removed %d unfinished file(s) left in %s by a run that was stopped: %s", len(removed),
                           self.folder, shown)

    def release(self) -> None:
        if self._held:
            with _HELD_GUARD:
                _HELD.discard(self.path.resolve())
            self.path.unlink(missing_ok=True)
            self._held = False
            if self._created_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
