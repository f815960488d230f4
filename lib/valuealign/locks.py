"""Exclusive file locks on run folders, stage outputs and sweep cells, naming their holder.

Why: two ``make all`` in one checkout (or two sweeps of one grid) used to write the same run
folder at once; one crashed half-way and left a run marked done without its adapter. Every
writer of a shared folder now holds a lock on it for the whole write. The lock is
``fcntl.flock`` on a small lock file next to the folder: the kernel drops it when the holder
exits, even on ``kill -9``, so a stale lock never needs cleaning up. The holder writes who it
is (pid, host, command, start time) into the lock file, so the process that finds the lock
taken can say who holds it.

The second process refuses at once (``timeout=0``, the default) or waits up to ``timeout``
seconds; ``VALUEALIGN_LOCK_TIMEOUT`` sets the default for every lock of a process and of the
notebooks' kernels it starts (they inherit the environment).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TIMEOUT_ENV = "VALUEALIGN_LOCK_TIMEOUT"
POLL_S = 0.2


class LockHeldError(RuntimeError):
    """Another process holds the lock; the message names it (pid, host, command, since when)."""


def default_timeout() -> float:
    """Seconds to wait for a taken lock: ``$VALUEALIGN_LOCK_TIMEOUT`` or 0 (refuse at once)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"environment variable {TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"environment variable {TIMEOUT_ENV}={raw!r} must be >= 0 seconds")
    return value


def command_line() -> str:
    """This process's command as typed (``python -m valuealign.notebooks ...``, from
    /proc/self/cmdline on Linux; ``sys.argv`` elsewhere, which shows a module's file instead)."""
    try:
        words = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        if words and words[0]:
            return shlex.join(w.decode(errors="replace") for w in words)
    except OSError:
        pass
    return shlex.join(sys.argv) if sys.argv and sys.argv[0] else sys.executable


def holder_info() -> dict[str, Any]:
    """Who this process is, as written into a lock file it holds."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def read_holder(lock_file: Path) -> dict[str, Any]:
    """The holder recorded in ``lock_file`` ({} when unreadable: it may be being rewritten)."""
    try:
        data = json.loads(lock_file.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (holder not recorded yet)"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')} "
            f"(command: {holder.get('command', '?')})")


@contextlib.contextmanager
def hold(lock_file: Path | str, what: str, timeout: float | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_file`` for the ``with`` block.

    ``what`` names the thing locked (e.g. ``run folder runs/<id>``) for the error message;
    ``timeout``: seconds to wait for a taken lock (None: :func:`default_timeout`; 0: refuse
    at once). Raises :class:`LockHeldError` naming the holder when the lock stays taken.
    """
    lock_file = Path(lock_file)
    timeout = default_timeout() if timeout is None else float(timeout)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = describe_holder(read_holder(lock_file))
                    waited = f" after waiting {timeout:g} s" if timeout > 0 else ""
                    raise LockHeldError(
                        f"{what} is locked by {holder}{waited}: another process is writing it. Wait for it "
                        f"to finish (or set {TIMEOUT_ENV}=<seconds> to wait), then run again; "
                        f"lock file {lock_file}") from None
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_info(), sort_keys=True) + "\n").encode(), 0)
        try:
            yield lock_file
        finally:
            os.ftruncate(fd, 0)  # the file stays (removing it would race with a waiter)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def sibling_lock(folder: Path | str) -> Path:
    """The lock file of a folder: ``.<name>.lock`` next to it (not inside: the folder's content
    is hashed and listed, and a lock file must not create a run folder that does not exist)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"
