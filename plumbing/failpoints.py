"""Named crash points for the failure tests: SIGKILL (or raise in) this process at a chosen step.

The failure tests must kill a job at exact places (before its first write,
between two file writes, after the last write but before the manifest, in the
middle of a training epoch) to prove that a rerun or a restart repairs every one
of them. Killing from outside at the right moment is a race; instead the code
calls ``failpoint(name)`` at each such place, and the test sets
``NER_FAILPOINTS=name``, ``name:N`` (fire on the N-th hit in this process) or
``name:N:raise`` (raise :class:`InjectedFailure` instead of killing) in the
process's environment; several are separated by commas. Unset, a failpoint
costs one dictionary lookup.

``name:N:wait`` stops the process there instead: it writes a marker file
``<$NER_FAILPOINTS_DIR>/<name>.<pid>`` and waits (up to ``WAIT_LIMIT_S``) for the
test to do something to it from outside, such as removing its node. The test polls
for the marker, so the fault lands at that exact step, with no race. Deleting the
marker lets the process go on: a barrier, e.g. for two runs that must both have
planned before either commits.

The kill is a real SIGKILL: no ``finally`` block, atexit hook or Ray shutdown
runs, exactly like an OOM kill or a lost node.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

ENV = "NER_FAILPOINTS"
WAIT_DIR_ENV = "NER_FAILPOINTS_DIR"  # where ``wait`` failpoints leave their markers
WAIT_LIMIT_S = 300.0
_hits: Counter = Counter()


class InjectedFailure(RuntimeError):
    """Raised by a failpoint armed with the ``raise`` action."""


def _armed() -> dict[str, tuple[int, str]]:
    armed = {}
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        name, _, rest = item.partition(":")
        count, _, action = rest.partition(":")
        if action not in ("", "kill", "raise", "wait"):
            raise ValueError(f"{ENV}: unknown action {action!r} in {item!r} (kill, raise or wait)")
        armed[name] = (int(count or 1), action or "kill")
    return armed


def failpoint(name: str) -> None:
    """SIGKILL this process (or raise) if ``name`` is armed and this is its N-th hit."""
    armed = _armed()
    if name not in armed:
        return
    _hits[name] += 1
    count, action = armed[name]
    if _hits[name] != count:
        return
    if action == "raise":
        raise InjectedFailure(f"failpoint {name}: injected failure on hit {count}")
    if action == "wait":
        _wait(name)
        return
    print(f"failpoint {name}: killing process {os.getpid()}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _wait(name: str) -> None:
    """Leave a marker, then wait to be killed; go on once it is deleted, or after ``WAIT_LIMIT_S``."""
    directory = os.environ.get(WAIT_DIR_ENV)
    if not directory:
        raise ValueError(f"{ENV}: the wait action needs {WAIT_DIR_ENV} set to a directory")
    marker = Path(directory, f"{name}.{os.getpid()}")
    marker.touch()
    print(f"failpoint {name}: process {os.getpid()} waiting", file=sys.stderr, flush=True)
    deadline = time.monotonic() + WAIT_LIMIT_S
    while time.monotonic() < deadline and marker.exists():
        time.sleep(0.1)
