"""``dropnet demo``: train → export → serve → predict, end to end, on the bundled digits.

1. trains the ``digits_demo`` preset (a 64-256-256-10 ReLU net, retain 0.8/0.5, max-norm);
2. exports it as a model package ``OUT/models/digits/1``;
3. starts ``dropnet serve`` as a child process on a free loopback port;
4. asks it, through the ``dropnet.v1`` client, for deterministic and MC-dropout predictions of
   a test digit, of an ambiguous one (two digits of different classes blended 50/50) and of
   uniform noise;
5. prints predicted class, confidence and uncertainty, then stops the server with SIGTERM and
   checks that it drained and exited cleanly.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dropnet.core.errors import ConfigError, DropnetError
from dropnet.server.process import ServeProcess

PRESET = "digits_demo"
MODEL_NAME = "digits"
SERVER_START_TIMEOUT_S = 120.0
SERVER_READY_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 30.0


@dataclass
class DemoResult:
    """What the demo did, for printing and for tests."""

    out_dir: Path
    test_error: float
    inputs: np.ndarray
    descriptions: list[str]
    deterministic: dict[str, Any]
    mc: dict[str, Any]
    mc_samples: int
    server_exit_code: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``dropnet demo``."""
    parser.add_argument("--out", type=Path, default=None, help="directory for the run, package and server log "
                        "(default: runs/demo-<timestamp>)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and of the MC-dropout masks")
    parser.add_argument("--mc-samples", type=int, default=100, help="MC-dropout samples per prediction")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its report."""
    out = args.out or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    result = run_demo(out, epochs=args.epochs, seed=args.seed, mc_samples=args.mc_samples)
    print(format_report(result))
    return 0 if result.server_exit_code == 0 else 1


def run_demo(out: Path, epochs: int | None = None, seed: int = 0, mc_samples: int = 100) -> DemoResult:
    """Train, export, serve and query; return everything that was observed."""
    if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 1:
        raise ConfigError(f"mc_samples (--mc-samples) must be an integer >= 1, got {mc_samples!r}")
    from dropnet.exporter.package import export_package
    from dropnet.trainer.config import load_preset
    from dropnet.trainer.data import load_dataset
    from dropnet.trainer.loop import train

    config = load_preset(PRESET)
    config.seed = seed
    if epochs is not None:
        config.optim.epochs = epochs
    dataset = load_dataset(config.data, config.seed)
    final = train(config, out / "run", dataset=dataset)
    models = out / "models"
    export_package(out / "run", models / MODEL_NAME / "1", name=MODEL_NAME, version="1")
    inputs, descriptions = demo_inputs(out / "run", dataset.test.x, dataset.test.y, seed)

    log_path = out / "server.log"
    flags = ["--models", str(models), "--host", "127.0.0.1", "--port", "0", "--reload-interval", "0"]
    with ServeProcess(flags, log_path=log_path) as server:
        target = server.wait_serving(SERVER_START_TIMEOUT_S)
        deterministic, mc = query_server(target, inputs, mc_samples, seed, log_path)
        exit_code = server.stop(SERVER_STOP_TIMEOUT_S)
    return DemoResult(out, final["test_error"], inputs, descriptions, deterministic, mc, mc_samples, exit_code)


def query_server(
    target: str, inputs: np.ndarray, mc_samples: int, seed: int, log_path: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Deterministic and MC-dropout predictions of ``inputs`` from the server at ``target``."""
    import grpc

    from dropnet.server.client import DropnetClient

    with DropnetClient(target) as client:
        try:
            client.wait_ready(SERVER_READY_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            raise DropnetError(
                f"the server at {target} did not accept connections within {SERVER_READY_TIMEOUT_S:g}s; see {log_path}"
            ) from None
        deterministic = client.predict(MODEL_NAME, inputs)
        mc = client.predict(MODEL_NAME, inputs, mc_samples=mc_samples, seed=seed)
    return deterministic, mc


def demo_inputs(run_dir: Path, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, list[str]]:
    """Three inputs from clear to meaningless: a test digit the trained net gets right, a 50/50 blend
    of two correctly classified test digits of different classes, and uniform noise."""
    import torch

    from dropnet.trainer.rundir import load_run

    _, spec, model = load_run(run_dir)
    with torch.inference_mode():
        correct = model(torch.from_numpy(x)).argmax(dim=1).numpy() == y
    known = correct if correct.any() else np.ones_like(correct)  # a barely trained net may get none right
    first = int(np.flatnonzero(known)[0])
    differs = y != y[first]
    other = int(np.flatnonzero(known & differs if (known & differs).any() else differs)[0])
    blend = (x[first] + x[other]) / 2
    low, high = spec.value_range
    noise = np.random.default_rng(seed).uniform(low, high, size=x[first].shape)
    descriptions = [f"test digit (a {y[first]})", f"blend of a {y[first]} and a {y[other]}", "uniform noise"]
    return np.stack([x[first], blend, noise]).astype(np.float32), descriptions


def format_report(result: DemoResult) -> str:
    """The demo's human-readable report."""
    det, mc = result.deterministic, result.mc
    lines = [
        f"trained {PRESET} on the bundled digits: test error {result.test_error:.2%}",
        f"artifacts: {result.out_dir}/run (training run), {result.out_dir}/models/{MODEL_NAME}/1 (model package), "
        f"{result.out_dir}/server.log",
        "",
        f"predictions from the gRPC server (model {mc['model']} version {mc['version']}):",
        f"{'input':<28} {'deterministic':>16} | {'MC dropout, T=' + str(result.mc_samples) + ', seed ' + str(mc['seed']):>44}",
        f"{'':<28} {'class  conf.':>16} | {'class  mean p   std   entropy  mutual inf.':>44}",
    ]
    for row, description in enumerate(result.descriptions):
        d_class, m_class = int(det["predicted_class"][row]), int(mc["predicted_class"][row])
        lines.append(
            f"{description:<28} {d_class:>9} {det['probabilities'][row, d_class]:>6.1%} | "
            f"{m_class:>9} {mc['probabilities'][row, m_class]:>7.1%} {mc['std'][row, m_class]:>6.3f} "
            f"{mc['predictive_entropy'][row]:>8.3f} {mc['mutual_information'][row]:>11.3f}"
        )
    lines += [
        "",
        "entropy and mutual information are in nats; higher means less certain (mutual information: the part",
        "of the uncertainty that comes from the model, i.e. disagreement between the sampled thinned networks).",
        f"server stopped with SIGTERM: exit code {result.server_exit_code}",
    ]
    return "\n".join(lines)
