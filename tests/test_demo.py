"""``dropnet demo`` end to end: train → export → serve (a real subprocess) → predict over gRPC."""

from pathlib import Path

import numpy as np

from dropnet.cli import main
from dropnet.demo import format_report, run_demo
from server.predictor import Predictor


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
    assert "clean test digit" in report and "blend of" in report and "exit code 0" in report


def test_demo_cli_prints_the_report(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--epochs", "2", "--mc-samples", "10"]) == 0
    out = capsys.readouterr().out
    assert "MC dropout, T=10" in out and "server stopped with SIGTERM: exit code 0" in out
