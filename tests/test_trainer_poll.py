"""Ray Train's controller poll interval: ours unless the user set one."""

import os

from training.trainer import POLL_ENV, POLL_S, controller_poll_interval


def test_the_poll_interval_defaults_to_ours(monkeypatch):
    monkeypatch.delenv(POLL_ENV, raising=False)
    assert controller_poll_interval() == float(POLL_S) < 2.0  # Ray Train's default is 2 s
    assert os.environ[POLL_ENV] == POLL_S  # where the driver's Ray Train reads it


def test_a_users_poll_interval_wins(monkeypatch):
    monkeypatch.setenv(POLL_ENV, "3")
    assert controller_poll_interval() == 3.0
