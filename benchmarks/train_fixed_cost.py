"""Training's fixed cost under Ray Train's controller poll interval: its default 2 s against ours.

python -m benchmarks.train_fixed_cost [--repeats 3] [--config configs/train_minilm_cpu.yaml]

Runs ``jobs.train`` as a user does, a short run (one epoch of 10 steps, 50 devel
sentences) so that the fixed cost is most of it, alternating the peers: Ray
Train's default poll (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2``) and ours (unset, so
``training.trainer`` sets ``POLL_S``). Reads each run's ``time:`` console line and
prints the medians of "Ray Train and the rest" (training's wall time less worker
setup, steps, evaluation and the last checkpoint) and of the wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PEERS = {"Ray Train's default, 2 s": "2", "ours": None}


def run(config: str, storage: Path, name: str, poll: str | None) -> tuple[float, float]:
    """(wall s, "Ray Train and the rest" s) of one short training run."""
    env = {k: v for k, v in os.environ.items() if k != POLL_ENV}
    if poll is not None:
        env[POLL_ENV] = poll
    command = [sys.executable, "-m", "jobs.train", "--config", config, "epochs=1",
               "max_steps_per_epoch=10", "max_eval_sentences=50", f"name={name}",
               f"storage_path={storage}"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"jobs.train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rest = re.search(r"Ray Train and the rest ([\d.]+)", proc.stdout)
    if rest is None:
        raise SystemExit(f"no time line in the console:\n{proc.stdout[-2000:]}")
    return wall, float(rest.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_fixed_cost", description=__doc__
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="configs/train_minilm_cpu.yaml")
    args = parser.parse_args(argv)
    storage = Path(tempfile.mkdtemp(prefix="fixed-cost-"))
    runs: dict[str, list[tuple[float, float]]] = {peer: [] for peer in PEERS}
    for i in range(args.repeats):  # alternating, so the machine's drift hits both alike
        for peer, poll in PEERS.items():
            runs[peer].append(run(args.config, storage, f"run{i}-{poll or 'ours'}", poll))
            print(f"{peer}: wall {runs[peer][-1][0]:.1f} s, Ray Train and the rest "
                  f"{runs[peer][-1][1]:.1f} s", flush=True)  # fmt: skip
    print("\n| peer | wall s (median) | Ray Train and the rest s (median) |\n|---|---:|---:|")
    medians = {}
    for peer, rows in runs.items():
        medians[peer] = [statistics.median(r[k] for r in rows) for k in (0, 1)]
        print(f"| {peer} | {medians[peer][0]:.1f} | {medians[peer][1]:.1f} |")
    default, ours = medians["Ray Train's default, 2 s"], medians["ours"]
    print(f"\nours/default: wall {ours[0] / default[0]:.2f}x, the rest {ours[1] / default[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
