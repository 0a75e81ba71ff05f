"""A regression MLP with dropout for scikit-learn's bundled diabetes data, in plain PyTorch.

    python examples/diabetes_mlp.py --out runs/diabetes
    dropnet export --module examples.diabetes_mlp:build --weights runs/diabetes/model.safetensors \
        --input-shape 10 --regression --targets progression --out models/diabetes/1 --name diabetes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_diabetes
from torch import nn

TEST_ROWS = 88


def build() -> nn.Module:
    """The factory ``dropnet export --module examples.diabetes_mlp:build`` calls: 10 features → disease progression."""
    return nn.Sequential(
        nn.Linear(10, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the weights and test rows")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    data = load_diabetes(scaled=True)
    order = np.random.default_rng(args.seed).permutation(len(data.target))
    x = torch.tensor(data.data[order] * 20.0, dtype=torch.float32)  # features to roughly unit scale
    y = torch.tensor(data.target[order], dtype=torch.float32).unsqueeze(1)
    x_train, y_train, x_test, y_test = x[TEST_ROWS:], y[TEST_ROWS:], x[:TEST_ROWS], y[:TEST_ROWS]
    model = build()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(args.epochs):
        model.train()
        optimiser.zero_grad()
        nn.functional.mse_loss(model(x_train), y_train).backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        rmse = nn.functional.mse_loss(model(x_test), y_test).sqrt().item()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), args.out / "model.safetensors")
    np.save(args.out / "test_rows.npy", x_test[:3].numpy())
    print(f"trained {args.epochs} full-batch epochs: test RMSE {rmse:.1f} (target std {y.std().item():.1f}); "
          f"true progression of test_rows.npy: {y_test[:3, 0].tolist()}")


if __name__ == "__main__":
    main()
