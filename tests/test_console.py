"""The training console: one epoch line with per-type F1, and a summary without JSON."""

from ner.labels import ENTITY_TYPES
from training.console import epoch_line, summary
from training.metrics import evaluation_metrics

GOLD = [["B-Cell", "I-Cell", "O", "B-Taxon"], ["O", "B-Gene"]]
PRED = [["B-Cell", "I-Cell", "O", "O"], ["O", "B-Gene"]]


def _metrics():
    metrics = evaluation_metrics(GOLD, PRED)
    metrics.update(epoch=2, global_step=16, train_loss=0.5)
    return metrics


def test_epoch_line_is_one_line_with_every_type():
    line = epoch_line(_metrics(), epochs=4)
    assert "\n" not in line and line.startswith("epoch 2/4  train loss 0.5000")
    assert "devel F1 0.8000 strict 0.8000" in line
    assert all(f"{kind} " in line for kind in ENTITY_TYPES)
    assert "Cell 1.000" in line and "Taxon 0.000" in line and "step 16" in line


def test_summary_names_best_epoch_table_steps_and_export():
    text = summary(_metrics(), 16, "/out/model")
    assert text.startswith("best epoch 2: devel F1 0.8000 (strict IOB2 0.8000)")
    assert "{" not in text  # no dicts
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == ["Cell"]]
    assert rows == [["Cell", "1.0000", "1.0000", "1.0000", "1.0000", "1"]]
    assert text.endswith("steps: 16\nmodel: /out/model")


def test_time_line_splits_the_run_into_its_phases():
    from training.console import time_line

    clock = [0.0, 2.0, 7.0, 67.0, 69.0]  # start, data read, Ray up, trained, exported
    history = [{"setup_s": 10.0, "train_s": 20.0, "eval_s": 4.0}, {"train_s": 20.0, "eval_s": 4.0}]
    line = time_line(clock, history, {"checkpoint_s": 1.5})
    assert line == (
        "time: ray start 5.0 s, data 2.0 s, training 60.0 s (worker setup 10.0, epochs 40.0, "
        "evaluation 8.0, last checkpoint 1.5, Ray Train and the rest 2.0), export 2.0 s"
    )
