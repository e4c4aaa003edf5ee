"""plumbing.failpoints: fires on the N-th hit of an armed name, kills or raises, else costs nothing."""

import subprocess
import sys

import pytest

from plumbing import failpoints
from plumbing.failpoints import InjectedFailure, failpoint


@pytest.fixture(autouse=True)
def fresh_counts():
    failpoints._hits.clear()
    yield
    failpoints._hits.clear()


def test_unarmed_failpoints_do_nothing(monkeypatch):
    monkeypatch.delenv(failpoints.ENV, raising=False)
    for _ in range(3):
        failpoint("train.after_step")


def test_raise_fires_on_the_nth_hit_only(monkeypatch):
    monkeypatch.setenv(failpoints.ENV, "other:1, train.after_epoch:2:raise")
    failpoint("train.after_epoch")  # hit 1
    with pytest.raises(InjectedFailure, match="train.after_epoch"):
        failpoint("train.after_epoch")  # hit 2
    failpoint("train.after_epoch")  # hit 3: fired already


def test_unknown_action_is_an_error(monkeypatch):
    monkeypatch.setenv(failpoints.ENV, "x:1:explode")
    with pytest.raises(ValueError, match="explode"):
        failpoint("x")


def test_kill_is_a_real_sigkill():
    code = (
        "from plumbing.failpoints import failpoint\nfailpoint('p')\nfailpoint('p')\nprint('alive')"
    )
    env = {failpoints.ENV: "p:2", "PYTHONPATH": "."}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == -9 and "alive" not in done.stdout
    assert "failpoint p: killing process" in done.stderr


def test_wait_leaves_a_marker_and_holds_the_process(monkeypatch, tmp_path):
    import os
    import time

    monkeypatch.setenv(failpoints.ENV, "p:2:wait")
    monkeypatch.setenv(failpoints.WAIT_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(failpoints, "WAIT_LIMIT_S", 0.3)
    failpoint("p")  # hit 1
    assert not any(tmp_path.iterdir())
    started = time.monotonic()
    failpoint("p")  # hit 2: marker, then held until the limit
    assert time.monotonic() - started >= 0.3
    assert [p.name for p in tmp_path.iterdir()] == [f"p.{os.getpid()}"]


def test_wait_without_a_marker_directory_is_an_error(monkeypatch):
    monkeypatch.setenv(failpoints.ENV, "p:1:wait")
    monkeypatch.delenv(failpoints.WAIT_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match=failpoints.WAIT_DIR_ENV):
        failpoint("p")
