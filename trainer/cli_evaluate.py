"""``dropnet evaluate RUN_DIR``: test error of weight scaling vs Monte-Carlo model averaging (paper Fig. 11)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dropnet.core.devices import DEVICES
from dropnet.core.fileio import atomic_write_json
from dropnet.trainer.config import DataConfig

RESULT_FILE = "evaluate.json"
RANGE = ".."
"""Separates the ends of a range of sample counts: ``1..100`` is every k from 1 to 100."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register RUN_DIR and the evaluation flags."""
    data_docs = {name: field.description for name, field in DataConfig.model_fields.items()}
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run directory (from `dropnet train`)")
    parser.add_argument(
        "--data", metavar="NAME|PATH", help=f"{data_docs['name']} (default: the data the run was trained on)"
    )
    parser.add_argument("--data-dir", metavar="DIR", help=f"{data_docs['data_dir']} (default: the run's)")
    parser.add_argument(
        "--mc-samples", type=parse_counts, metavar="K,...|A..B",
        help="comma-separated numbers k of sampled thinned networks to average (default: 1,2,5,10,20,50,100); "
             "A..B is every k from A to B (1..100 for the paper's Figure 11)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the dropout masks (default: 0)")
    parser.add_argument(
        "--repeats", type=int, default=1, metavar="R",
        help="repeat the MC evaluation with seeds S..S+R-1 and report mean ± std per k (default: 1)",
    )
    parser.add_argument("--split", choices=("test", "val"), default="test", help="split to evaluate (default: test)")
    parser.add_argument("--json-out", metavar="FILE", type=Path, help=f"result file (default: RUN_DIR/{RESULT_FILE})")
    parser.add_argument(
        "--figure", metavar="PNG", type=Path,
        help="also draw the paper's Figure 11 from the result: MC error against k (error bars over --repeats) "
             "next to the weight-scaling line",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="torch device (default: auto)")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and write the JSON result."""
    from dropnet.trainer.evaluate import DEFAULT_MC_SAMPLES, evaluate

    result = evaluate(
        args.run_dir, data_cfg=requested_data(args), mc_samples=args.mc_samples or DEFAULT_MC_SAMPLES,
        seed=args.seed, split=args.split, device=args.device, repeats=args.repeats,
    )
    result["command"] = sys.argv
    out = args.json_out or args.run_dir / RESULT_FILE
    atomic_write_json(out, result)
    print(f"{format_table(result)}\nresult: {out}")
    if args.figure is not None:
        from dropnet.quality.figure11 import write_figure11

        write_figure11(result, args.figure, where=str(out))
        print(f"figure: {args.figure}")
    return 0


def parse_counts(text: str) -> list[int]:
    """The sample counts of ``1,2,5``, ``1..100`` or a mix (``1..10,20,50``); ranges include both ends."""
    counts: list[int] = []
    for part in text.split(","):
        first, is_range, last = part.partition(RANGE)
        if not is_range:
            counts.append(_integer(part))
            continue
        low, high = _integer(first), _integer(last)
        if low > high:
            raise argparse.ArgumentTypeError(f"expected a range A..B with A <= B, got {part.strip()!r}")
        counts.extend(range(low, high + 1))
    return counts


def _integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def requested_data(args: argparse.Namespace) -> DataConfig | None:
    """The run's data config with --data/--data-dir applied, or None (the run's own) when neither is given."""
    if args.data is None and args.data_dir is None:
        return None
    from dropnet.trainer.rundir import load_config

    data = load_config(args.run_dir)[0].data
    changes = {"name": args.data, "data_dir": args.data_dir}
    return DataConfig.from_dict({**data.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


def format_table(result: dict[str, Any]) -> str:
    """One line per k: MC error (± std over repeats) next to the weight-scaling error."""
    dataset = result["dataset"]["name"]
    seeds = result["seeds"]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}..{seeds[-1]}"
    lines = [
        f"{result['run_dir']} on {dataset} {result['split']} ({result['examples']} examples, {seed_text}, "
        f"{result['device']})",
        f"{'k':>6}  {'MC error':>17}  {'weight scaling':>14}",
    ]
    scaled = f"{result['weight_scaling_error']:.2%}"
    for entry in result["mc"]:
        mc = f"{entry['error']:.2%}" + (f" ± {entry['std']:.2%}" if "std" in entry else "")
        lines.append(f"{entry['k']:>6}  {mc:>17}  {scaled:>14}")
    return "\n".join(lines)
