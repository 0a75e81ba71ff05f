"""Ask a running ``dropnet serve`` for predictions with uncertainty, with the unchanged Triton client.

    python examples/ask_server.py --server 127.0.0.1:50051 --model digits_cnn \
        --rows runs/digits_cnn/test_rows.npy --mc-samples 100 --seed 0

Any KServe v2 (Open Inference Protocol) client works the same way: parameters ``mc_samples`` and
``seed`` select MC dropout. Classification models answer with probabilities, std, predictive
entropy and mutual information; regression models with prediction, or mean and std.
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.grpc as triton

DTYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def infer(client: triton.InferenceServerClient, model: str, rows: np.ndarray, outputs: list[str],
          parameters: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """The named outputs for ``rows`` (deterministic unless ``parameters`` ask for MC)."""
    tensor = triton.InferInput("x", list(rows.shape), DTYPES[rows.dtype])
    tensor.set_data_from_numpy(rows)
    result = client.infer(model, [tensor], parameters=parameters,
                          outputs=[triton.InferRequestedOutput(name) for name in outputs])
    return {name: result.as_numpy(name) for name in outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--model", required=True)
    parser.add_argument("--rows", required=True, help=".npy file of input rows [B, …]")
    parser.add_argument("--mc-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = np.load(args.rows)
    client = triton.InferenceServerClient(args.server)
    served = {output.name for output in client.get_model_metadata(args.model).outputs}
    mc = {"mc_samples": args.mc_samples, "seed": args.seed}
    print(f"model {args.model}: deterministic | MC dropout, T={args.mc_samples}, seed {args.seed}")
    if "predicted_class" in served:
        det = infer(client, args.model, rows, ["predicted_class", "probabilities"])
        unc = infer(client, args.model, rows, ["predicted_class", "probabilities", "std", "predictive_entropy",
                                                "mutual_information"], mc)
        print(f"{'row':>3} {'class':>6} {'conf.':>6} | {'class':>6} {'mean p':>7} {'std':>6} {'entropy':>8} "
              f"{'mutual inf.':>11}")
        for b in range(len(rows)):
            c, k = det["predicted_class"][b], unc["predicted_class"][b]
            print(f"{b:>3} {c:>6} {det['probabilities'][b, c]:>6.1%} | {k:>6} {unc['probabilities'][b, k]:>7.1%} "
                  f"{unc['std'][b, k]:>6.3f} {unc['predictive_entropy'][b]:>8.3f} {unc['mutual_information'][b]:>11.3f}")
        print("entropy and mutual information in nats; higher means less certain")
    else:
        det = infer(client, args.model, rows, ["prediction"])
        unc = infer(client, args.model, rows, ["mean", "std"], mc)
        print(f"{'row':>3} {'prediction':>10} | {'mean':>8} {'± std':>7}")
        for b in range(len(rows)):
            print(f"{b:>3} {det['prediction'][b, 0]:>10.1f} | {unc['mean'][b, 0]:>8.1f} {unc['std'][b, 0]:>7.1f}")


if __name__ == "__main__":
    main()
