"""``dropnet demo`` end to end: train → export → serve (a real subprocess) → predict over gRPC."""

import socket
from pathlib import Path

import numpy as np
import pytest

from dropnet import demo
from dropnet.cli import main
from dropnet.demo import format_report, run_demo
from dropnet.core.errors import ConfigError, DropnetError
from dropnet.server.predictor import Predictor


def test_demo_answers_equal_the_in_process_engine(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", epochs=3, seed=5, mc_samples=20)

    assert result.server_exit_code == 0
    assert (tmp_path / "demo" / "run" / "model.safetensors").is_file()
    local = Predictor.load(tmp_path / "demo" / "models" / "digits" / "1")
    det = local.predict(result.inputs)
    mc = local.predict(result.inputs, mc_samples=20, seed=5)
    np.testing.assert_allclose(result.deterministic["probabilities"], det.probabilities, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result.deterministic["predicted_class"], det.predicted_class)
    assert result.mc["seed"] == 5
    for name in ("probabilities", "std", "predictive_entropy", "mutual_information"):
        np.testing.assert_allclose(result.mc[name], getattr(mc, name), rtol=1e-6, atol=1e-6)
    report = format_report(result)
    assert "test digit (a " in report and "blend of" in report and "uniform noise" in report and "exit code 0" in report


def test_demo_cli_prints_the_report(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--epochs", "2", "--mc-samples", "10"]) == 0
    out = capsys.readouterr().out
    assert "MC dropout, T=10" in out and "server stopped with SIGTERM: exit code 0" in out


def test_mc_samples_below_one_is_refused_before_training(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match=r"mc_samples \(--mc-samples\) must be an integer >= 1, got 0"):
        run_demo(tmp_path / "demo", mc_samples=0)
    assert main(["demo", "--out", str(tmp_path / "d"), "--mc-samples", "-1"]) == 2
    assert "must be an integer >= 1, got -1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists() and not (tmp_path / "d").exists()


def test_a_server_that_accepts_no_connection_is_a_dropnet_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "SERVER_READY_TIMEOUT_S", 0.2)
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(DropnetError, match=rf"server at {target} did not accept connections within 0\.2s; see .*server\.log"):
            demo.query_server(target, np.zeros((1, 64), np.float32), 5, 0, tmp_path / "server.log")
