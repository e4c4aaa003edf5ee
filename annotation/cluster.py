"""Start or join Ray with a console a person can read; the logs stay in Ray's session folder.

Every job starts Ray through :func:`init_ray` (annotate, reprocess, train and the
quickstart). Quiet unless ``verbose``:

- ``ray.init(logging_level=WARNING)``: no "Started a local Ray instance" banner;
- a job-level ``ray.LoggingConfig(log_level="ERROR")`` sets the ``ray`` and root
  loggers of every worker and actor of the job, Ray Train's controller and its
  placement-group cleaner included (whose state queries warn on every poll when
  the dashboard is off); with one set, worker lines also lose their
  "(RayTrainWorker pid=...)" prefix;
- ``log_to_driver=False``: worker output (model loading bars, library warnings)
  stays in the workers' log files; a failing task still raises in the driver;
- Ray 2.60 turns token authentication on for a new local cluster and warns
  "Token authentication is enabled" each time; that logger is raised to ERROR, so
  authentication stays as Ray sets it and only the notice goes. (Setting
  ``RAY_AUTH_MODE=token`` instead would need to happen before Ray is imported:
  Ray reads it into its config on import.) A cluster joined by address, one from
  ``ray start --head``, needs ``RAY_AUTH_MODE=token`` and its token as usual;
- Ray Data: progress bars as asked (tqdm on a terminal; otherwise Ray Data logs
  progress every ``RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL`` seconds, 30 by default
  here instead of 10), no execution-plan line at start (``print_on_execution_start``),
  and only warnings and progress from the ``ray.data`` logger on the console. Its
  file handler still gets everything (``logs/ray-data/``).

With ``heap_trim_s`` (jobs.annotate's default 10 s), every worker of a new local
cluster, and the driver, hands freed heap back to the OS that often (:mod:`plumbing.heap`):
without it, a long run's workers kept hundreds of MiB each that they no longer used.

The session's log folder is printed once, so what is hidden can be found.
"""

from __future__ import annotations

import logging
import os

from plumbing.heap import ARROW_POOL_ENV, INTERVAL_ENV, start_trimming

QUIET_PROGRESS_INTERVAL_S = "30"
# Hugging Face's documented switches, read when transformers is imported in a worker.
QUIET_WORKER_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
# Ray Data 2.60 reads Parquet footers with this many actors per read, 32 by default:
# starting them took 30 s of a 2-core machine's start-up and 9 s of an H200 node's,
# while one actor's 128 I/O threads read a thousand footers in about a second. The
# driver reads it when it plans the read.
FOOTER_ACTORS, FOOTER_ACTORS_DEFAULT = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "2"
_PROGRESS_LOGGER = "ray.data._internal.progress.logging_progress"
_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


class _ConsoleFilter(logging.Filter):
    """Pass warnings, and Ray Data's logged progress (its non-terminal progress bars)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(_PROGRESS_LOGGER)


def worker_runtime_env(verbose: bool, heap_trim_s: float) -> dict:
    """The runtime environment of a new local cluster's workers."""
    # No Hugging Face "Loading weights" bars or info logs in worker output.
    env_vars = {} if verbose else dict(QUIET_WORKER_ENV)
    runtime_env: dict = {}
    if heap_trim_s > 0:
        env_vars |= {INTERVAL_ENV: f"{heap_trim_s:g}", **ARROW_POOL_ENV}
        runtime_env["worker_process_setup_hook"] = f"{start_trimming.__module__}.start_trimming"
    if env_vars:
        runtime_env["env_vars"] = env_vars
    return runtime_env


def init_ray(
    address: str = "",
    num_cpus: int = 0,
    object_store_mb: int = 0,
    dashboard: bool = True,
    verbose: bool = False,
    progress_bars: bool = True,
    worker_logs: bool = False,
    heap_trim_s: float = 0,
):
    """Start a local Ray (or join ``address`` / ``RAY_ADDRESS``) unless one is running; returns ``ray``.

    ``num_cpus`` and ``object_store_mb`` (0 = Ray's default) size a new local
    cluster only, and ``dashboard=False`` starts it without Ray's dashboard: a dozen
    fewer processes and a faster start, for short runs and tests. ``worker_logs`` shows the workers' own output on the console even
    when not ``verbose`` (a job whose workers print its progress, like training,
    wants it). ``heap_trim_s`` > 0 hands freed heap back to the OS that often in the
    driver and, on a new local cluster, in every worker (:mod:`plumbing.heap`). Prints
    where the session's logs are, once per process.
    """
    if not verbose:
        os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", QUIET_PROGRESS_INTERVAL_S)
    os.environ.setdefault(FOOTER_ACTORS, FOOTER_ACTORS_DEFAULT)  # read where the plan is made
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        if not verbose:
            logging.getLogger(_AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)
        kwargs: dict = dict(
            logging_level=logging.INFO if verbose else logging.WARNING,
            logging_config=ray.LoggingConfig(
                encoding="TEXT", log_level="INFO" if verbose else "ERROR"
            ),
            log_to_driver=verbose or worker_logs,
        )
        address = address or os.environ.get("RAY_ADDRESS", "")
        if address:
            kwargs["address"] = address
        else:
            # "local": a new cluster. Left empty, Ray joins any `ray start` cluster on
            # this machine (its /tmp/ray/ray_current_cluster), someone else's included.
            kwargs["address"] = "local"
            if num_cpus:
                kwargs["num_cpus"] = num_cpus
            if object_store_mb:
                kwargs["object_store_memory"] = object_store_mb * 1024 * 1024
            if not dashboard:  # else Ray's default: started when its packages are present
                kwargs["include_dashboard"] = False
            # Every worker of the job. (A job submitted to a cluster brings its own
            # runtime environment, which is left as it is.)
            if runtime_env := worker_runtime_env(verbose, heap_trim_s):
                kwargs["runtime_env"] = runtime_env
        context = ray.init(**kwargs)
        start_trimming(heap_trim_s)
        print(f"ray logs: {context.address_info['session_dir']}/logs", flush=True)

    data = DataContext.get_current()
    data.enable_progress_bars = progress_bars
    data.print_on_execution_start = verbose
    data.verbose_stats_logs = verbose
    _quiet_ray_data_console(verbose)
    return ray


def _quiet_ray_data_console(verbose: bool) -> None:
    """Filter the console handler of Ray Data's logger; its file handler keeps every record."""
    from ray.data._internal.logging import SessionFileHandler, configure_logging

    logger = logging.getLogger("ray.data")
    if not logger.handlers:
        configure_logging()
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler | SessionFileHandler):
            continue
        for old in [f for f in handler.filters if isinstance(f, _ConsoleFilter)]:
            handler.removeFilter(old)
        if not verbose:
            handler.addFilter(_ConsoleFilter())
