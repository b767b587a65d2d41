"""Named fault points: where the fault suite kills the process or fills the disk on purpose.

Production code calls :func:`point` at the places a crash would hurt most (inside every atomic
write, at node boundaries, inside a round: generation, training, dataset write). Normally that
is one dictionary lookup. With ``ZERO1TOA_FAULT`` set, a matching point acts:

- ``ZERO1TOA_FAULT=kill:<name>``: SIGKILL this process at point ``<name>`` (no cleanup, no
  ``finally``, no atexit: what a power cut or the OOM killer does);
- ``ZERO1TOA_FAULT=enospc:<name>``: raise ``OSError(ENOSPC)`` there, as a full disk would;
- ``<name>`` may end in ``*`` (a prefix) and be followed by ``@<n>`` (act at the n-th hit, 1-based).

``tests/test_faults.py`` drives every point and checks that the next run recovers with outputs
identical to an uninterrupted run's.
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "ZERO1TOA_FAULT"
_hits: dict[str, int] = {}


def _matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


def point(name: str) -> None:
    """A fault point called ``name`` (e.g. ``write:checkpoint.pt``, ``after:fit_head``)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    action, _, target = spec.partition(":")
    target, _, nth = target.partition("@")
    if not _matches(target, name):
        return
    _hits[spec] = _hits.get(spec, 0) + 1
    if _hits[spec] != (int(nth) if nth else 1):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)


__all__ = ["ENV", "point"]
