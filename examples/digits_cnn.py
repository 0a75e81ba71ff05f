"""A small CNN for scikit-learn's bundled 8×8 digits, in plain PyTorch — the README's "Your own model".

It knows nothing of dropnet: ``build()`` returns the network, and running this file trains it
for one epoch and writes what ``dropnet export --module`` needs::

    python examples/digits_cnn.py --out runs/digits_cnn
    dropnet export --module examples.digits_cnn:build --weights runs/digits_cnn/model.safetensors \
        --input-shape 1,8,8 --value-range 0,16 --classes runs/digits_cnn/classes.txt \
        --out models/digits_cnn/1 --name digits_cnn
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from torch import nn

TEST_ROWS = 360
SHOWN_DIGITS = (3, 5, 8)
"""The test digits written to test_rows.npy (the first test example of each)."""


class DigitsCNN(nn.Module):
    """conv-BN-ReLU-Dropout2d-pool, conv-ReLU-pool, then two dropout-regularised dense layers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout2d(0.1), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x / 16.0))


def build() -> nn.Module:
    """The factory ``dropnet export --module examples.digits_cnn:build`` calls."""
    return DigitsCNN()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the weights, labels and test rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    digits = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(digits.target))
    x = torch.tensor(digits.images[order], dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target[order])
    x_train, y_train, x_test, y_test = x[TEST_ROWS:], y[TEST_ROWS:], x[:TEST_ROWS], y[:TEST_ROWS]
    model = build()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(y_train)).split(16):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        error = (model(x_test).argmax(1) != y_test).float().mean().item()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), args.out / "model.safetensors")
    (args.out / "classes.txt").write_text("".join(f"{label}\n" for label in digits.target_names))
    shown = [int(np.flatnonzero(y_test.numpy() == digit)[0]) for digit in SHOWN_DIGITS]
    np.save(args.out / "test_rows.npy", x_test[shown].numpy())
    print(f"trained {args.epochs} epoch(s): test error {error:.2%}; test_rows.npy holds test digits {SHOWN_DIGITS}")


if __name__ == "__main__":
    main()
