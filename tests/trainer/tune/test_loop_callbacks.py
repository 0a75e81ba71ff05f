"""The training loop's hooks for a search: an epoch callback that can stop a run, and no test evaluation."""

from __future__ import annotations


import pytest

from dropnet.trainer.loop import train
from dropnet.trainer.metrics import format_record, plot_curves, read_records
from dropnet.trainer.rundir import load_run, read_config


class Stop(Exception):
    pass


def test_an_exception_from_on_epoch_stops_the_run_leaving_a_valid_run_directory(base, digits, tmp_path) -> None:
    straight = train(base, tmp_path / "straight", dataset=digits)
    seen = []

    def stop_after_one(record: dict) -> None:
        seen.append(record["epoch"])
        assert [r["epoch"] for r in read_records(tmp_path / "run" / "metrics.jsonl")] == seen  # logged before the call
        if record["epoch"] == 1:
            raise Stop("enough")

    with pytest.raises(Stop):
        train(base, tmp_path / "run", dataset=digits, on_epoch=stop_after_one)
    assert seen == [1]
    final = read_config(tmp_path / "run")["final_metrics"]
    assert final["epochs"] == 1 and final["stopped_by"] == "Stop: enough"
    [record] = read_records(tmp_path / "run" / "metrics.jsonl")
    assert (final["best_epoch"], final["val_error"]) == (1, record["val_error"])
    load_run(tmp_path / "run")  # loads: config and best weights are consistent
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    resumed = train(base, tmp_path / "run", resume=True, dataset=digits)  # its checkpoint continues like any other
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in straight.items() if k != "seconds"}


def test_without_test_evaluation_the_test_split_is_never_scored(base, digits, tmp_path, monkeypatch) -> None:
    import dropnet.trainer.loop as loop

    scored = []
    real = loop.error_rate
    monkeypatch.setattr(loop, "error_rate", lambda model, x, y, bf16=False: scored.append(len(y)) or real(model, x, y))
    final = train(base, tmp_path / "run", dataset=digits, evaluate_test=False)
    assert scored == [len(digits.val)] * base.optim.epochs
    records = read_records(tmp_path / "run" / "metrics.jsonl")
    assert [r["test_error"] for r in records] == [None, None] and final["test_error"] is None
    assert read_config(tmp_path / "run")["final_metrics"]["test_error"] is None
    assert "test err n/a" in format_record(records[0], base.optim.epochs)
    with_test = [{**records[0], "test_error": 0.5}, records[1]]  # a run resumed with test evaluation mixes both
    plot_curves(with_test, tmp_path / "mixed.png")
    assert (tmp_path / "mixed.png").read_bytes()[:4] == b"\x89PNG"


def test_the_train_summary_says_n_a_for_an_unevaluated_test_split(tmp_path, capsys, monkeypatch) -> None:
    import dropnet.trainer.loop as loop
    from dropnet.cli import main

    final = {"best_epoch": 1, "val_error": 0.25, "test_error": None, "epochs": 1, "seconds": 0.5}
    monkeypatch.setattr(loop, "train", lambda *args, **kwargs: final)
    assert main(["train", "--out", str(tmp_path / "run")]) == 0
    assert "val error 25.00%, test error n/a (0.5s of training)" in capsys.readouterr().out
