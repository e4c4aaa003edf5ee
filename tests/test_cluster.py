"""The console filter on Ray Data's logger: warnings and progress pass, other chatter does not."""

import logging

from annotation.cluster import _ConsoleFilter


def _record(name, level):
    return logging.LogRecord(name, level, __file__, 1, "message", None, None)


def test_only_warnings_and_logged_progress_reach_the_console():
    console = _ConsoleFilter()
    progress = "ray.data._internal.progress.logging_progress"
    assert console.filter(_record(progress, logging.INFO))
    assert console.filter(
        _record("ray.data._internal.execution.streaming_executor", logging.WARNING)
    )
    assert not console.filter(
        _record("ray.data._internal.execution.streaming_executor", logging.INFO)
    )
    assert not console.filter(_record("ray.data._internal.progress", logging.INFO))
