"""One run at a time per run folder.

Two processes writing one run folder would race on every artifact (the last writer wins, and one
run's lineage points at files the other replaced). :func:`run_lock` takes an exclusive
``flock`` on ``<run>/.lock`` and writes the holder's pid, host, start time and command into it:
a second run of the same folder fails at once (or waits, ``wait=True``) with a message naming
the holder. The kernel drops the lock when the holder dies, so a stale lock left by a killed
process is simply taken over. Different run folders never contend.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock (the message names it)."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} (started {started}: {info.get('command', '?')})"


@contextlib.contextmanager
def run_lock(run_dir: Path, wait: bool = False, poll_s: float = 0.5, timeout_s: float | None = None) -> Iterator[Path]:
    """Hold ``<run_dir>/.lock`` for the block; :class:`RunFolderBusy` when it is held elsewhere.

    Re-entrant within one process (a flow that runs nodes in worker threads takes it once).
    """
    run_dir = Path(run_dir).resolve()
    key = str(run_dir)
    if key in _held:
        _held[key] += 1
        try:
            yield run_dir / LOCK_NAME
        finally:
            _held[key] -= 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait or (timeout_s is not None and time.monotonic() - t0 > timeout_s):
                    raise RunFolderBusy(
                        f"run folder {run_dir} is in use by {_holder(path)}: wait for it to finish, "
                        "or give this run another folder (run.name=...)"
                    ) from None
                time.sleep(poll_s)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _held[key] = 1
        try:
            yield path
        finally:
            del _held[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_held: dict[str, int] = {}

__all__ = ["run_lock", "RunFolderBusy", "LOCK_NAME"]
