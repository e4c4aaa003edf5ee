"""What a training run prints: one line per epoch, a closing summary, and quiet libraries.

Ray, Ray Train and Hugging Face log a great deal that a person running a job
does not act on. By default it stays off the console and in Ray's session log
folder (``<session>/logs``, printed once by the job); ``verbose=true`` shows it.
Everything here uses the libraries' documented switches, not text filters. Ray
itself is started quietly by ``annotation.cluster.init_ray``.
"""

from __future__ import annotations

import logging

from ner.labels import ENTITY_TYPES

# Ray Train's own logger on the console: warnings and errors only unless verbose.
QUIET_TRAIN_LOG_LEVEL = "WARNING"


def quiet_worker_logs() -> None:
    """Keep library chatter of a Ray Train worker off the console, not out of the logs.

    Hugging Face: transformers' documented verbosity switch hides its info and
    warnings (the load report listing a newly initialised classification head,
    among them) and its progress bars ("Writing model shards"); errors still show.
    Ray Train gives the worker's root logger two handlers, its log file and the
    console (forwarded to the driver). Some of Ray Train's own INFO records, such
    as each ``ray.train.report`` with its metrics dict, reach the root logger, so
    the console handler is raised to warnings; the file keeps everything.
    """
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):  # the console, not the log file
            handler.setLevel(logging.WARNING)


def worker_env(verbose: bool, passthrough: dict[str, str]) -> dict[str, str]:
    """Environment variables for the Ray Train workers.

    ``RAY_TRAIN_ENABLE_PRINT_PATCH=0`` keeps ``print`` a plain write to the worker's
    stdout. Ray Train otherwise routes it through the root logger, whose console
    handler and the tee for a replaced ``sys.stdout`` write each line twice.
    """
    env = dict(passthrough)
    if not verbose:
        env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    return env


def _f1_by_type(metrics: dict, prefix: str = "devel") -> str:
    return " ".join(f"{kind} {metrics[f'{prefix}_{kind}_f1']:.3f}" for kind in ENTITY_TYPES)


def epoch_line(metrics: dict, epochs: int) -> str:
    """One line per epoch: train loss, devel F1 (default and strict) and F1 per type."""
    return (
        f"epoch {int(metrics['epoch'])}/{epochs}  train loss {metrics['train_loss']:.4f}  "
        f"devel F1 {metrics['devel_f1']:.4f} strict {metrics['devel_strict_f1']:.4f}  |  "
        f"{_f1_by_type(metrics)}  |  step {int(metrics['global_step'])}"
    )


def summary(best: dict, steps: int, export_dir: str) -> str:
    """The closing summary: best epoch, devel F1, per-type table, steps, export."""
    lines = [
        f"best epoch {int(best['epoch'])}: devel F1 {best['devel_f1']:.4f} "
        f"(strict IOB2 {best['devel_strict_f1']:.4f}) on {int(best['devel_sentences'])} sentences",
        f"  {'type':<10}{'precision':>10}{'recall':>8}{'F1':>8}{'strict F1':>11}{'support':>9}",
    ]
    for kind in ENTITY_TYPES:
        lines.append(
            f"  {kind:<10}{best[f'devel_{kind}_precision']:>10.4f}"
            f"{best[f'devel_{kind}_recall']:>8.4f}{best[f'devel_{kind}_f1']:>8.4f}"
            f"{best[f'devel_strict_{kind}_f1']:>11.4f}{int(best[f'devel_{kind}_support']):>9}"
        )
    lines.append(f"steps: {steps}")
    lines.append(f"model: {export_dir}")
    return "\n".join(lines)


def time_line(clock: list[float], history: list[dict], last: dict) -> str:
    """Where a run's wall time went: the driver's phases, and inside training the workers'.

    ``clock`` holds the driver's times at start, after the data, Ray's start, the
    training and the export; ``history`` the epochs' metrics (an interrupted and
    resumed run counts every attempt's epochs), ``last`` the last epoch's.
    """
    data_s, ray_s, fit_s, export_s = (b - a for a, b in zip(clock, clock[1:], strict=False))
    setup = history[0].get("setup_s", 0.0) if history else 0.0
    steps = sum(h.get("train_s", 0.0) for h in history)
    evaluation = sum(h.get("eval_s", 0.0) for h in history)
    rest = fit_s - setup - steps - evaluation
    return (
        f"time: ray start {ray_s:.1f} s, data {data_s:.1f} s, training {fit_s:.1f} s "
        f"(worker setup {setup:.1f}, epochs {steps:.1f}, evaluation {evaluation:.1f}, "
        f"last checkpoint {last.get('checkpoint_s', 0.0):.1f}, Ray Train and the rest "
        f"{rest:.1f}), export {export_s:.1f} s"
    )
