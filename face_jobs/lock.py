"""One run at a time per output folder: a lock file created exclusively, removed when the run ends.

The lock file (``.gpen-restore.lock`` in the output folder) holds the process id and host name of the run that owns
it, and on Linux the machine's boot id and the process's start time. A second run into the same folder gets
``OutputLockedError`` naming the owner and the file. A lock left behind by a run that no longer exists on this host
(killed with SIGKILL, a crash, a reboot; a live process that only reuses its id, or this very process in a restarted
container) is taken over with a warning. While a run writes, its lock file must stay: a folder deleted mid-run is
not made again without it (``writer.check_lock_of``). A folder the
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
from dataclasses import dataclass
from pathlib import Path

from face_pipeline.errors import OutputLockedError, OutputWriteError

from .writer import HELD_GUARD, HELD_LOCKS, describe_os_error, remove_stale_parts

logger = logging.getLogger(__name__)

LOCK_NAME = ".gpen-restore.lock"


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


def _boot_id() -> str:
    """This machine's boot id (Linux; "-" elsewhere): a lock written before a reboot names another."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or "-"
    except OSError:
        return "-"


def _start_time(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux; "-" elsewhere or when it is gone): a process
    that reuses a dead run's id started at another time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        return stat[stat.rindex(")") + 2:].split()[19]  # field 22, counted after the parenthesised name
    except (OSError, ValueError, IndexError):
        return "-"


@dataclass(frozen=True)
class LockOwner:
    """The run a lock file names: process id, host name, and (Linux) boot id and start time ("-": unknown)."""

    pid: int
    host: str
    boot: str = "-"
    started: str = "-"

    @classmethod
    def this_process(cls) -> LockOwner:
        return cls(os.getpid(), socket.gethostname(), _boot_id(), _start_time(os.getpid()))

    def line(self) -> str:
        return f"{self.pid} {self.host} {self.boot} {self.started}\n"


def _read_owner(path: Path) -> LockOwner | None:
    """The run a lock file names (a file of an older version names only the process id and host); None while it is
    being written, or unreadable."""
    try:
        fields = path.read_text(encoding="utf-8").split()
        return LockOwner(int(fields[0]), fields[1], *fields[2:4])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def _owner_alive(path: Path, owner: LockOwner) -> bool:
    """Whether the run a readable lock file names may still run: on another host, assumed so; written before this
    machine's last boot, no; with this process's id, only if this process holds that lock (else it was left by an
    earlier process that had the same id, e.g. the previous run of a restarted container, where the run is often
    process 1); else whether that process lives and, where both are known, started when the lock's owner did (not a
    later process that reuses its id)."""
    if owner.host != socket.gethostname():
        return True
    if "-" not in (owner.boot, boot := _boot_id()) and owner.boot != boot:
        return False
    if owner.pid == os.getpid():
        with HELD_GUARD:
            return path.resolve() in HELD_LOCKS
    if not _alive(owner.pid):
        return False
    started = _start_time(owner.pid)
    return "-" in (owner.started, started) or owner.started == started


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

    def _owner(self) -> LockOwner | None:
        return _read_owner(self.path)  # None (being written, or unreadable): treated as held

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(LockOwner.this_process().line())
        return True

    def acquire(self) -> None:
        try:
            self._created_folder = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            created = self._create()
            if not created:
                owner = self._owner()
                if owner is not None and not _owner_alive(self.path, owner):
                    logger.warning("taking over %s, left by process %d which no longer runs", self.path, owner.pid)
                    self.path.unlink(missing_ok=True)
                    created = self._create()
        except OSError as exc:
            raise OutputWriteError(f"could not create the lock file {self.path}: {describe_os_error(exc)}") from exc
        if not created:
            owner = self._owner()
            who = f"process {owner.pid} on {owner.host}" if owner else "another process"
            raise OutputLockedError(
                f"another run ({who}) is writing into {self.folder} (lock file {self.path}); wait for it to end, "
                f"or delete the lock file if no run is active")
        self._held = True
        with HELD_GUARD:
            HELD_LOCKS.add(self.path.resolve())
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
            with HELD_GUARD:
                HELD_LOCKS.discard(self.path.resolve())
            self.path.unlink(missing_ok=True)
            self._held = False
            if self._created_folder and self.folder.is_dir() and not any(self.folder.iterdir()):
                self.folder.rmdir()

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
