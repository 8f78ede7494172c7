"""A run's work directory: where it is, who holds it, and writing files there so a crash never
half-writes one.

A run *claims* its workdir before it reads data or writes anything (``Claim.acquire``): it creates
the directory if needed and takes an exclusive ``flock`` on ``<workdir>/.rnnjax-claim``, holding it
for its lifetime. The kernel drops the lock when the process ends, however it ends, so a claim left
by a killed run is stale by construction and the next run takes it over; a live holder makes a
second run fail at once with one line naming it (pid, host, start time, command). File-mode bits
play no part, so the rule holds for root too. ``flock`` is advisory and per host: two runs on
different machines sharing a network file system are only kept apart where that file system
implements ``flock`` (Linux NFS emulates it with byte-range locks).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import sys
import tempfile

CLAIM_FILE = ".rnnjax-claim"


class WorkdirError(ValueError):
    """The workdir cannot be used as asked (in use, not empty, not a directory, not writable)."""


def default_workdir(experiment: str) -> str:
    """``runs/<experiment>/<timestamp>`` under the current directory."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", experiment, stamp)


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``: a reader
    (or a later run) sees the old file or the new one, never a partial one. The file gets the mode
    a plain ``open`` would give it (0666 minus the umask), so colleagues can read a shared run."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def run_contents(workdir: str) -> list[str]:
    """The entries of ``workdir`` that belong to a run (everything but the claim file)."""
    return sorted(name for name in os.listdir(workdir) if name != CLAIM_FILE)


class Claim:
    """This process's exclusive use of a workdir; ``release()`` (or process exit) gives it up.

    ``created`` is the outermost directory acquiring it created (the workdir or a parent of
    it; None if it existed), so a run that fails before it has written anything can leave the
    file system as it found it (``release(discard=True)``).
    """

    def __init__(self, workdir: str, fd: int, created: str | None):
        self.workdir = workdir
        self._fd = fd
        self.created = created

    @classmethod
    def hold(cls, directory: str) -> Claim:
        """Claims ``directory`` (created if missing) whatever it holds.

        Raises:
          WorkdirError: another live process holds it, or it cannot be a directory of ours.
        """
        if not directory:
            raise WorkdirError("the workdir is an empty path; pass a directory")
        existed = _check_directory(directory)
        created = None
        if not existed:
            created = os.path.abspath(directory)
            while not os.path.exists(os.path.dirname(created)):
                created = os.path.dirname(created)
        try:
            os.makedirs(directory, exist_ok=True)
            fd = _lock(os.path.join(directory, CLAIM_FILE))
        except OSError as error:
            raise WorkdirError(
                f"cannot use {directory!r} as a run directory ({error.strerror or error}); "
                "choose another --workdir"
            ) from None
        return cls(directory, fd, created=created)

    @classmethod
    def acquire(cls, workdir: str, *, resume: bool) -> Claim:
        """Claims ``workdir`` for a new run (it must be missing or empty) or, with ``resume``, for
        continuing the run it holds (it must hold one: a ``config.json``).

        Raises:
          WorkdirError: with one line naming the problem and the fix.
        """
        if not workdir:
            raise WorkdirError("the workdir is an empty path; pass a directory")
        if resume and not os.path.lexists(workdir):
            raise WorkdirError(f"nothing to resume: {workdir!r} does not exist")
        claim = cls.hold(workdir)
        try:
            contents = run_contents(workdir)
            if resume and "config.json" not in contents:
                raise WorkdirError(
                    f"nothing to resume in {workdir!r}: it holds no run (no config.json)"
                )
            if not resume and contents:
                raise WorkdirError(
                    f"workdir {workdir!r} is not empty; pass --resume to continue that run or "
                    "choose another --workdir"
                )
        except BaseException:
            claim.release()
            raise
        return claim

    def release(self, discard: bool = False) -> None:
        """Gives the workdir up. ``discard`` removes what this run wrote, when it created the
        directory or found it empty — for a run that failed before its first checkpoint."""
        if self._fd < 0:
            return
        path = os.path.join(self.workdir, CLAIM_FILE)
        if discard:
            if self.created:
                shutil.rmtree(self.workdir, ignore_errors=True)
                # Then the parents it created, each only while empty (another run may have
                # made its own workdir beside this one meanwhile).
                parent = os.path.abspath(self.workdir)
                while parent != self.created and os.path.dirname(parent) != parent:
                    parent = os.path.dirname(parent)
                    try:
                        os.rmdir(parent)
                    except OSError:
                        break
            else:
                for name in run_contents(self.workdir):
                    _remove(os.path.join(self.workdir, name))
        # Unlinked while still locked: a process that opened the old file and locks it after this
        # sees that the path no longer names it and starts over (``_lock``).
        if os.path.exists(path):
            os.unlink(path)
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _check_directory(workdir: str) -> bool:
    """Whether ``workdir`` exists (as a directory); raises for anything else at that path."""
    if os.path.islink(workdir) and not os.path.exists(workdir):
        raise WorkdirError(
            f"{workdir!r} is a symbolic link to nothing ({os.readlink(workdir)!r}); "
            "remove it or choose another --workdir"
        )
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(
            f"{workdir!r} exists and is not a directory; remove it or choose another --workdir"
        )
    return os.path.isdir(workdir)


def _lock(path: str) -> int:
    """An open descriptor of ``path`` holding an exclusive ``flock``; the holder's description is
    written into the file for the next one to name."""
    while True:
        try:
            # Never through a link: root would write the holder's description into its target.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.EISDIR):
                raise
            fd = -1
        if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
            if fd >= 0:
                os.close(fd)
            raise WorkdirError(
                f"{path} is not a regular file (a link, a directory, a device); remove it, then "
                "run again"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(fd)
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise WorkdirError(
                    f"workdir {os.path.dirname(path)!r} is in use by another run ({holder}); "
                    "wait for it to end or choose another --workdir"
                ) from None
            raise
        try:
            same_file = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # the holder released (and unlinked) it meanwhile: lock the new file
    description = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(description).encode(), 0)
    return fd


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 65536, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']} since {info['started']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)
