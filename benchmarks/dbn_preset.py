"""The paper's DBN + dropout fine-tuning row (Table 2: 784-500-500-2000-10, 0.92%) on MNIST within a CPU budget.

Runs, through the real CLI and one after the other:

    dropnet pretrain --config dbn_pretrain_mnist --epochs P ...
    dropnet train --config dbn_dropout_finetune --init PRETRAINED --epochs F ...

``--pretrain-epochs`` caps the epochs per RBM layer and ``--finetune-epochs`` the fine-tuning epochs
(the paper's schedules are far longer than a 2-core CPU allows). The summary, with the exact commands
and the paper's figure beside the one reached, is printed and written as JSON.

    python benchmarks/dbn_preset.py --pretrain-epochs 2 --finetune-epochs 12
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_model  # noqa: E402  (after the path is set)
from dropnet.trainer.device import resolve_device  # noqa: E402

PAPER_TEST_ERROR = 0.0092
"""Srivastava et al. (2014), Table 2: DBN + dropout finetuning, 784-500-500-2000-10."""
PRETRAIN_PRESET, FINETUNE_PRESET = "dbn_pretrain_mnist", "dbn_dropout_finetune"


def run(command: list[str], threads: int | None) -> float:
    """Run one ``dropnet`` command (with ``threads`` intra-op threads, if given); return its wall time in seconds."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dropnet.cli", *command], check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, required=True, help="epochs per RBM layer (the preset: 50)")
    parser.add_argument("--finetune-epochs", type=int, required=True, help="fine-tuning epochs (the preset: 100)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "dbn")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (both commands)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads (OMP_NUM_THREADS); on a shared machine 1 avoids oversubscription "
        "(default: torch's)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dbn_cpu_budget.json")
    args = parser.parse_args()
    pretrained, finetuned = args.runs_dir / PRETRAIN_PRESET, args.runs_dir / FINETUNE_PRESET
    common = ["--data-dir", args.data_dir, "--device", args.device]
    pretrain = ["pretrain", "--config", PRETRAIN_PRESET, *common, "--epochs", str(args.pretrain_epochs),
                "--out", str(pretrained)]
    finetune = ["train", "--config", FINETUNE_PRESET, "--init", str(pretrained), *common,
                "--epochs", str(args.finetune_epochs), "--out", str(finetuned)]
    env = [f"OMP_NUM_THREADS={args.threads}"] if args.threads else []
    pretrain_seconds = run(pretrain, args.threads)
    finetune_seconds = run(finetune, args.threads)

    pre = json.loads((pretrained / "config.json").read_text())
    fine = json.loads((finetuned / "config.json").read_text())
    final = fine["final_metrics"]
    commands = [" ".join([*env, "dropnet", *command]) for command in (pretrain, finetune)]
    summary = {  # one row in the format of benchmarks/mnist_presets.py, which benchmarks/results_md.py reads
        "preset": FINETUNE_PRESET,
        "row": "Table 2: DBN + dropout finetuning, 784-500-500-2000-10 logistic",
        "paper_test_error": PAPER_TEST_ERROR,
        "test_error": final["test_error"],
        "val_error": final["val_error"],
        "best_epoch": final["best_epoch"],
        "epochs": final["epochs"],
        "pretrain_epochs_per_layer": pre["config"]["pretrain"]["epochs"],
        "pretrain_recon_error_per_layer": [layer["recon_error"] for layer in pre["final_metrics"]["layers"]],
        "init_weight_scale_per_layer": [layer["weight_scale"] for layer in fine["init"]["layers"]],
        "wall_seconds": pretrain_seconds + finetune_seconds,
        "wall_seconds_split": {"pretrain": pretrain_seconds, "finetune": finetune_seconds},
        "command": " && ".join(commands),
        "runs": [str(pretrained), str(finetuned)],
        "seed": fine["config"]["seed"],
        "device": str(resolve_device(args.device)),
        "threads": args.threads,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "versions": fine["versions"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([summary], indent=2) + "\n")
    print(
        f"DBN + dropout fine-tuning on MNIST: test error {final['test_error']:.2%} "
        f"(paper {PAPER_TEST_ERROR:.2%}) after "
        f"{summary['pretrain_epochs_per_layer']} pretraining epochs per layer and {final['epochs']} fine-tuning "
        f"epochs (best {final['best_epoch']}), {summary['wall_seconds']:.0f}s wall on {summary['device']}\n"
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
