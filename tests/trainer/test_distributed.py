"""Data-parallel training: real 2-process gloo jobs started by torchrun, as a user starts them.

Each rank logs the SHA-256 of its parameters after every epoch (``-v``); the tests read both ranks'
lines and tie the last one to the weights in the checkpoint, so "identical replicas" is checked
from what each process really held, not only by the trainer's own comparison.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from dropnet.cli import main
from dropnet.core.errors import ConfigError, DropnetError
from dropnet.trainer.config import DataConfig, ModelConfig
from dropnet.trainer.data import load_dataset
from dropnet.trainer.distributed import Replicas, environment, parameter_digest
from dropnet.trainer.loop import _examples_per_epoch, train_epoch
from dropnet.trainer.maxnorm import MaxNorm
from dropnet.trainer.models import build_model, weight_layers
from dropnet.trainer.rundir import load_config
from tests.sources import REPO

MAX_NORM = 0.5
"""Small enough to bind on the digits network from the first epoch."""
FLAGS = [
    "--data", "digits", "--hidden", "64", "--lr", "0.5", "--batch-size", "50", "--max-norm", str(MAX_NORM),
    "--device", "cpu",
]
DIGEST_LINE = re.compile(r"rank (\d+) of (\d+): parameters after epoch (\d+): sha256 ([0-9a-f]{64})")


def torchrun(*argv: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m dropnet -v train ARGV`` on this checkout."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
        "-m", "dropnet", "-v", "train", *argv,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def digests(log: str) -> dict[int, dict[int, str]]:
    """epoch → rank → the parameter digest that rank logged."""
    found: dict[int, dict[int, str]] = {}
    for rank, _, epoch, digest in DIGEST_LINE.findall(log):
        found.setdefault(int(epoch), {})[int(rank)] = digest
    return found


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def checkpoint_digest(run_dir: Path) -> str:
    """Digest of the parameters in the run's checkpoint (its last epoch), as the trainer computes it."""
    config, spec = load_config(run_dir)
    model = build_model(config.model, spec)
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    tensors = load_file(str(run_dir / "checkpoint" / state["tensors"]))
    model.load_state_dict({k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")})
    return parameter_digest(model).hex()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 3-epoch, 2-process gloo run: its directory and the torchrun log."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun(*FLAGS, "--epochs", "3", "--out", str(run_dir))
    return run_dir, done.stderr + done.stdout


def test_two_ranks_keep_bit_identical_parameters_with_max_norm_binding(ddp_run) -> None:
    run_dir, log = ddp_run
    logged = digests(log)
    assert sorted(logged) == [1, 2, 3]
    for epoch, by_rank in logged.items():
        assert sorted(by_rank) == [0, 1], epoch
        assert by_rank[0] == by_rank[1], f"epoch {epoch}: ranks differ"
    assert logged[3][0] == checkpoint_digest(run_dir)
    assert len(set(by_rank[0] for by_rank in logged.values())) == 3  # the parameters did change

    tensors = load_file(str(run_dir / "model.safetensors"))
    hidden = tensors["3.weight"]  # Standardize, Flatten, Dropout, then the hidden Linear
    norms = torch.linalg.vector_norm(hidden, dim=1)
    assert norms.max() <= MAX_NORM * (1 + 1e-6)
    assert (norms > MAX_NORM * (1 - 1e-6)).sum() > hidden.shape[0] // 2  # the bound binds for most units


def test_the_loss_falls_and_only_rank_0_reports(ddp_run) -> None:
    run_dir, log = ddp_run
    losses = [r["train_loss"] for r in records(run_dir)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] * 0.8
    assert log.count("best epoch ") == 1 and log.count("epoch 1/3  loss") == 1


def test_the_run_dir_is_shaped_like_a_single_process_run_and_exports(ddp_run, tmp_path) -> None:
    run_dir, _ = ddp_run
    single = tmp_path / "single"
    assert main(["train", *FLAGS, "--epochs", "3", "--out", str(single)]) == 0
    assert tree(run_dir) == tree(single)
    ddp_config, single_config = (json.loads((d / "config.json").read_text()) for d in (run_dir, single))
    assert sorted(ddp_config) == sorted(single_config)
    assert ddp_config["config"] == single_config["config"] and ddp_config["dataset"] == single_config["dataset"]
    assert [sorted(r) for r in records(run_dir)] == [sorted(r) for r in records(single)]

    package = tmp_path / "package"
    assert main(["export", str(run_dir), "--out", str(package)]) == 0
    assert sorted(p.name for p in package.iterdir()) == ["deterministic.onnx", "manifest.json", "mc.onnx"]


def test_a_resumed_distributed_run_continues_exactly_like_an_uninterrupted_one(ddp_run, tmp_path) -> None:
    straight, straight_log = ddp_run
    resumed = tmp_path / "resumed"
    torchrun(*FLAGS, "--epochs", "2", "--out", str(resumed))
    done = torchrun(*FLAGS, "--epochs", "3", "--resume", "--out", str(resumed))
    # rank 1's masks come from its own RNG state in the checkpoint: any other stream changes the gradients
    assert without_seconds(records(resumed)) == without_seconds(records(straight))
    assert digests(done.stderr)[3] == digests(straight_log)[3]


def test_every_global_batch_is_split_so_an_epoch_covers_the_data_once() -> None:
    for n, batch, world in [(1198, 50, 2), (1198, 100, 3), (1001, 100, 4), (1000, 100, 1), (1001, 100, 1)]:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
        used = _examples_per_epoch(n, batch, world)
        shares = [
            Replicas(rank, rank, world).shard(order[start : min(start + batch, used)])
            for start in range(0, used, batch) for rank in range(world)
        ]
        seen = torch.cat(shares)
        assert len(seen) == used and len(set(seen.tolist())) == used
        assert min(len(s) for s in shares) >= 2 or world == 1
        assert n - used < 2 * world  # what an epoch leaves out: a trailing batch too small to split


def test_torchrun_variables_are_checked(monkeypatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert environment() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ConfigError, match="RANK is 'two'; a distributed run needs WORLD_SIZE, RANK, LOCAL_RANK"):
        environment()
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match=r"expected WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE"):
        environment()
    monkeypatch.setenv("RANK", "1")
    assert environment() == (1, 0, 2)


def test_a_global_batch_too_small_for_the_ranks_is_refused(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dropnet",
         "train", *FLAGS, "--batch-size", "3", "--epochs", "1", "--out", str(tmp_path / "run")],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0
    assert "--batch-size 3 is too small for 2 processes" in done.stderr and "expected at least 4" in done.stderr


def _drift_worker(rank: int, rendezvous: str, results: str) -> None:
    """One rank of a 2-process gloo group: an epoch with max-norm on both ranks, then one where rank 1 skips it."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        data = load_dataset(DataConfig(name="digits"), seed=0)
        torch.manual_seed(0)
        model = build_model(ModelConfig(hidden=[32], max_norm=MAX_NORM), data.spec)
        torch.manual_seed(1 + rank)
        net = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
        replicas = Replicas(rank, rank, 2)
        x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
        outcome = []
        for skip in (False, rank == 1):
            bounds = [None] * 2 if skip else ModelConfig(hidden=[32], max_norm=MAX_NORM).resolved_max_norm()
            max_norm = MaxNorm(weight_layers(model), bounds)
            train_epoch(net, optimizer, max_norm, x, y, 50, torch.Generator().manual_seed(0), replicas=replicas)
            try:
                replicas.check_in_sync(model, len(outcome) + 1)
                outcome.append("in sync")
            except DropnetError as exc:
                outcome.append(str(exc))
        Path(results, f"rank-{rank}.json").write_text(json.dumps(outcome))
    finally:
        dist.destroy_process_group()


def test_the_drift_check_stops_a_run_whose_rank_skipped_max_norm(tmp_path) -> None:
    mp.start_processes(_drift_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    for rank in (0, 1):
        first, second = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert first == "in sync"
        assert second.startswith("the replicas' parameters diverged in epoch 2: rank(s) [1] differ from rank 0")
