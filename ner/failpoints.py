"""Named crash points for the failure tests: SIGKILL this process at a chosen step.

The driver-failure tests must kill a job at exact places (before its first write,
between two file writes, after the last write but before the manifest) to prove
that a rerun repairs every one of them. Killing from outside at the right moment
is a race; instead the job calls ``failpoint(name)`` at each such place, and the
test sets ``NER_FAILPOINTS=name`` or ``name:N`` (fire on the N-th hit) in the
job's environment. Unset, a failpoint costs one dictionary lookup.

The kill is a real SIGKILL: no ``finally`` block, atexit hook or Ray shutdown
runs, exactly like an OOM kill or a lost node.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENV = "NER_FAILPOINTS"
_hits: Counter = Counter()


def _armed() -> dict[str, int]:
    armed = {}
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        name, _, count = item.partition(":")
        armed[name] = int(count or 1)
    return armed


def failpoint(name: str) -> None:
    """SIGKILL this process if ``name`` is armed and this is its N-th hit."""
    armed = _armed()
    if name not in armed:
        return
    _hits[name] += 1
    if _hits[name] == armed[name]:
        print(f"failpoint {name}: killing process {os.getpid()}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
