"""ner.failpoints: fires on the N-th hit of an armed name, kills or raises, else costs nothing."""

import subprocess
import sys

import pytest

from ner import failpoints
from ner.failpoints import InjectedFailure, failpoint


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
    code = "from ner.failpoints import failpoint\nfailpoint('p')\nfailpoint('p')\nprint('alive')"
    env = {failpoints.ENV: "p:2", "PYTHONPATH": "."}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == -9 and "alive" not in done.stdout
    assert "failpoint p: killing process" in done.stderr
