"""A local Ray cluster whose nodes share no disk, in the shape of cluster.yaml, and an S3 server.

Support code for tests of habit 17 (data moves between nodes through storage every
node reaches, never through one node's local disk). One machine plays two nodes:

* the head: ``ray start --head --num-cpus=0``, as cluster.yaml's head; it runs the
  drivers (the test process and :func:`run_job`'s subprocess) and schedules no task;
* a worker with 2 CPUs: ``ray start --address=...`` inside ``unshare --mount``, with
  a private, empty tmpfs over the paths a node's local disk holds: the pytest base
  temp directory (where tests keep the head's files) and :data:`NODE_SCRATCH`.
  Everything else (the checkout, the venv, Ray's session folder under
  :data:`RAY_TEMP_DIR`) stays shared, standing in for the image every node of a
  real cluster runs;
* a local S3-compatible server (moto) that every node reaches over HTTP.

Processes are stopped by the session id they were started in (every Ray process
of a node inherits its ``ray start``'s session), never with ``ray stop``, which
would also stop other Ray instances on the machine.

Ray 2.60 notes: the nodes authenticate with the token in ``~/.ray/auth_token``
(``ray start --head`` with ``RAY_AUTH_MODE=token`` refuses to start without one; it
is generated once if missing); a driver in this process needs Ray's auth config
refreshed (see :func:`_connect`); both nodes write to one session folder, so the
worker runs without a log monitor of its own (the head's already forwards every
log file there, once).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODE_SCRATCH = Path("/var/tmp/craft-ner-node")
# Ray's temp dir for both nodes: visible to both, and apart from /tmp/ray, since
# `ray start --head` records its address there (ray_current_cluster) and any later
# `ray.init()` on the machine, conftest's ray_local included, would then try to
# join this cluster, during the tests or, after it is gone, fail.
RAY_TEMP_DIR = Path(tempfile.gettempdir()) / "ray-multinode"
BUCKET = "craft-ner-test"
# Each node's object store; Ray's default (30% of memory per node) is more than
# two nodes and the rest of the test session should share on a small CI machine.
OBJECT_STORE_BYTES = 512 * 1024**2
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class S3Server:
    """A local S3-compatible server and the ways each client reaches it.

    Picklable, so a Ray task can take it as an argument and call :meth:`filesystem`.
    """

    endpoint: str
    bucket: str = BUCKET
    region: str = "us-east-1"
    access_key: str = "testing"
    secret_key: str = "testing"

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def storage_options(self) -> dict[str, str]:
        """delta-rs (object_store) options, as tests/test_store_s3.py's ``s3_options``."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "aws_conditional_put": "etag",
            "timeout": "30s",
        }

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point the AWS SDKs, pyarrow and delta-rs here."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def filesystem(self):
        """A ``pyarrow.fs.S3FileSystem`` for this server."""
        from pyarrow import fs

        host = self.endpoint.removeprefix("http://")
        return fs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            endpoint_override=host,
            scheme="http",
        )


def _start_moto(port: int) -> subprocess.Popen:
    # A child process, not moto's ThreadedMotoServer: in-process it deadlocks when
    # delta-rs holds the GIL while waiting for the answer (see test_store_s3.py).
    return subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _await_s3(server: subprocess.Popen, s3: S3Server, deadline: float) -> None:
    """Wait until the server answers, then create the bucket."""
    import boto3

    port = int(s3.endpoint.rsplit(":", 1)[1])
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the local S3 server (moto) did not start") from None
            time.sleep(0.2)
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name=s3.region,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )
    client.create_bucket(Bucket=s3.bucket)


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """A moto server on 127.0.0.1 and a free port, with :data:`BUCKET` created."""
    port = free_port()
    server = _start_moto(port)
    try:
        s3 = S3Server(f"http://127.0.0.1:{port}")
        _await_s3(server, s3, time.monotonic() + 30)
        yield s3
    finally:
        _stop_session(server.pid)
        server.wait()


@dataclass(frozen=True)
class MultiNodeCluster:
    """A running head + worker cluster that share no local disk, and its S3 server.

    ``address``: the head's GCS, ``127.0.0.1:<port>``. ``env``: the environment of a
    driver on the head (``RAY_ADDRESS``, ``RAY_AUTH_MODE=token``, the S3 server's
    ``AWS_*``). ``scratch``: the node-local scratch dir, private on the worker, as is
    each of ``private_paths``. ``logs``: the `ray start` output of both nodes.
    """

    address: str
    head_node_id: str
    worker_node_id: str
    s3: S3Server
    scratch: Path
    private_paths: tuple[Path, ...]
    env: dict[str, str]
    logs: Path


def run_job(
    cluster: MultiNodeCluster, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` as a driver on the head, as `ray job submit` would."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _ray_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # `ray start` and the drivers get it explicitly
    # `python` in a job must be this environment's, as after `source .venv/bin/activate`.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra)
    return env


def _ensure_auth_token(env: dict[str, str]) -> None:
    """Generate ~/.ray/auth_token once per machine, as `ray get-auth-token --generate`."""
    if "RAY_AUTH_TOKEN" in env:
        return
    path = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not path.is_file():
        done = subprocess.run(
            [str(BIN / "ray"), "get-auth-token", "--generate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _start_head(env: dict[str, str], port: int, log) -> subprocess.Popen:
    command = [
        str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=0",
        f"--temp-dir={RAY_TEMP_DIR}", f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--include-dashboard=false",
        # Ray still binds these without a dashboard; their defaults (8265, 10001,
        # 52365) collide with any other Ray instance on the machine.
        f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _start_worker(
    env: dict[str, str], address: str, private: tuple[Path, ...], log
) -> subprocess.Popen:
    mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(str(p))}" for p in private)
    start = [
        str(BIN / "ray"), "start", f"--address={address}", "--num-cpus=2",
        f"--temp-dir={RAY_TEMP_DIR}", f"--object-store-memory={OBJECT_STORE_BYTES}",
        f"--dashboard-agent-listen-port={free_port()}",
        # Worker ports from the OS: both nodes' default ranges are the same.
        "--min-worker-port=0", "--max-worker-port=0",
        # The head's log monitor already forwards the shared session's logs.
        "--include-log-monitor=false",
    ]  # fmt: skip
    # `ray start` returns once the node runs; its processes keep the namespace alive.
    script = f"{mounts} && exec {shlex.join(start)}"
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _session(sid: int) -> list[psutil.Process]:
    procs = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                procs.append(proc)
    return procs


def _stop_session(sid: int, timeout: float = 30) -> None:
    """SIGKILL every live process of session ``sid`` (as `ray stop --force`) and wait."""
    deadline = time.monotonic() + timeout
    while procs := _session(sid):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of session {sid} outlived SIGKILL: {procs}")
        time.sleep(0.1)


def _in_namespace(ns: str) -> list[int]:
    pids = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/ns/mnt") == ns:
                pids.append(pid)
    return pids


def _finish(proc: subprocess.Popen, what: str, log: Path, deadline: float) -> None:
    try:
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    if code != 0:
        raise RuntimeError(f"{what} did not start ({code}):\n{log.read_text()[-3000:]}")


def _connect(address: str):
    """Connect this process to the cluster as a driver, with token authentication."""
    import ray
    from ray._private.authentication import authentication_token_setup
    from ray._raylet import AuthenticationTokenLoader

    if ray.is_initialized():  # one Ray instance per process; ray_local's may be up
        ray.shutdown()
    # ray.init with an explicit address reads the auth mode from the config cached
    # at import, so setting RAY_AUTH_MODE now needs Ray's own refresh (Ray 2.60).
    authentication_token_setup._enable_token_auth()
    AuthenticationTokenLoader.instance().reset_cache()
    ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray


@contextlib.contextmanager
def start_cluster(basetemp: Path, scratch: Path = NODE_SCRATCH) -> Iterator[MultiNodeCluster]:
    """Start S3, the head and the worker; connect this process as a driver; stop all.

    ``basetemp`` (pytest's base temp dir) and ``scratch`` are hidden from the worker
    by its private tmpfs. Polls for the worker to join, with a deadline.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    private = (Path(basetemp).resolve(), scratch.resolve())
    logs = Path(basetemp) / "multinode-logs"
    logs.mkdir(exist_ok=True)
    s3 = S3Server(f"http://127.0.0.1:{free_port()}")
    env = _ray_env(s3.env)
    _ensure_auth_token(env)
    gcs_port = free_port()
    address = f"127.0.0.1:{gcs_port}"
    started: list[subprocess.Popen] = []  # each leads a session of its own
    worker_ns = None
    ray = None
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        # moto and the head start side by side: each takes seconds on 2 cores.
        moto = _start_moto(int(s3.endpoint.rsplit(":", 1)[1]))
        started.append(moto)
        with open(logs / "head.log", "w") as log:
            head = _start_head(env, gcs_port, log)
        started.append(head)
        _finish(head, "the head node", logs / "head.log", deadline)
        with open(logs / "worker.log", "w") as log:
            worker = _start_worker(env, address, private, log)
        started.append(worker)
        _await_s3(moto, s3, deadline)
        ray = _connect(address)
        head_node_id = ray.get_runtime_context().get_node_id()
        _finish(worker, "the worker node", logs / "worker.log", deadline)
        while True:
            joined = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != head_node_id]
            if joined:
                worker_node_id = joined[0]["NodeID"]
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker node did not join within {START_TIMEOUT_S} s")
            time.sleep(0.2)
        worker_ns = os.readlink(f"/proc/{_session(worker.pid)[0].pid}/ns/mnt")
        yield MultiNodeCluster(
            address=address,
            head_node_id=head_node_id,
            worker_node_id=worker_node_id,
            s3=s3,
            scratch=scratch,
            private_paths=private,
            env={**env, "RAY_ADDRESS": address},
            logs=logs,
        )
    finally:
        if ray is not None:
            ray.shutdown()
        for proc in reversed(started):
            _stop_session(proc.pid)
            proc.wait()  # the `ray start`s have exited; their children go to init
        if worker_ns is not None:
            left = _in_namespace(worker_ns)
            assert not left, f"processes left in the worker's mount namespace: {left}"


@pytest.fixture(scope="module")
def multinode_cluster(tmp_path_factory) -> Iterator[MultiNodeCluster]:
    """The test process as a driver on a head + 2-CPU worker that share no disk.

    Mark the tests that use it ``integration`` and ``slow``; it starts in 7-20 s on
    2 busy cores. Tests use ``ray`` directly (this process is connected) or
    :func:`run_job`.
    """
    with start_cluster(tmp_path_factory.getbasetemp()) as cluster:
        yield cluster
