"""Side by side on one machine: our Ray Train job vs a one-process Hugging Face Trainer.

    python -m benchmarks.train_vs_hf_trainer --config configs/train_minilm_cpu.yaml [key=value ...]

Both peers get the same config (base model, data, hyperparameters, global batch, CPU
budget) and run one after the other as fresh processes; wall time is measured around
each process, start-up included. Prints devel F1 and wall time of each and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def _run(command: list[str], marker: str | None) -> tuple[dict, float]:
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{' '.join(command)} failed with exit code {proc.returncode}")
    if marker is None:
        return {}, seconds
    for line in proc.stdout.splitlines():
        if line.startswith(marker):
            return json.loads(line[len(marker) :]), seconds
    raise SystemExit(f"no '{marker}' line in the output of {' '.join(command)}")


def run_peers(config: str, overrides: list[str], storage: str = "outputs/bench") -> dict:
    """Run HF Trainer, then our job, on one config; each peer's result with ``wall_s``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    common = ["--config", config, *overrides]
    hf, hf_seconds = _run(
        [sys.executable, "-m", "benchmarks.hf_trainer_baseline", *common], "hf_trainer_result: "
    )
    # Printed at once: on a long run the first peer's figure is worth having early.
    print(f"HF Trainer done: {json.dumps(hf)}; wall {hf_seconds:.1f} s", flush=True)
    ours_command = [sys.executable, "-m", "jobs.train", *common, f"name=bench-{stamp}"]
    _, ours_seconds = _run([*ours_command, f"storage_path={storage}"], None)
    # The job prints a summary for people; its export's metrics.json has the figures.
    exported = json.loads(Path(storage, f"bench-{stamp}", "model", "metrics.json").read_text())
    ours = exported["best"] | {
        "global_step": exported["history"][-1]["global_step"],
        "steady_step_ms": exported["history"][0].get("steady_step_ms"),
    }
    return {"hf": hf | {"wall_s": hf_seconds}, "ours": ours | {"wall_s": ours_seconds}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_vs_hf_trainer")
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    peers = run_peers(args.config, args.overrides)
    hf, ours = peers["hf"], peers["ours"]
    print(f"machine: {platform.node()} {platform.machine()}, date {datetime.now(UTC):%Y-%m-%d}")
    print(f"config: {args.config} {' '.join(args.overrides)}")
    print(f"{'peer':<28}{'devel F1':>10}{'strict F1':>11}{'steps':>8}{'wall s':>9}")
    for name, peer in (("HF Trainer, 1 process", hf), ("Ray Train job (ours)", ours)):
        print(
            f"{name:<28}{peer['devel_f1']:>10.4f}{peer['devel_strict_f1']:>11.4f}"
            f"{peer['global_step']:>8}{peer['wall_s']:>9.1f}"
        )
    print(f"F1 difference (ours - HF): {100 * (ours['devel_f1'] - hf['devel_f1']):+.2f} points")
    print(f"wall-time ratio (ours / HF): {ours['wall_s'] / hf['wall_s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
