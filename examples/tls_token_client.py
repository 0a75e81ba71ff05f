"""Ask a ``dropnet serve`` that uses TLS (optionally mutual TLS) and a bearer token, with DropnetClient.

    python examples/tls_token_client.py --server localhost:50051 --model digits --rows rows.npy \
        --tls-ca pki/ca.pem --tls-cert pki/client.pem --tls-key pki/client.key --token-file pki/token

The server was started with ``--tls-cert``, ``--tls-key``, ``--token-file`` (and ``--tls-client-ca``
for mutual TLS); docs/security.md has the commands that make the certificates and start it. The
client trusts the CA of ``--tls-ca``, presents its own certificate when given one, and sends the
token with every call. It prints, per row, the class the deterministic net predicts and the MC
dropout answer with its uncertainty.
"""

from __future__ import annotations

import argparse

import numpy as np

from dropnet.server.client import DropnetClient
from dropnet.server.security import read_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="localhost:50051", help="HOST:PORT; the host must be named in the "
                        "server's certificate (localhost, 127.0.0.1, ...)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--rows", required=True, help=".npy file of input rows [B, ...]")
    parser.add_argument("--tls-ca", required=True, help="PEM CA certificate that signed the server's certificate")
    parser.add_argument("--tls-cert", help="this client's PEM certificate (for a server with --tls-client-ca)")
    parser.add_argument("--tls-key", help="this client's PEM private key")
    parser.add_argument("--token-file", required=True, help="file holding the server's bearer token")
    parser.add_argument("--mc-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = np.load(args.rows)
    client = DropnetClient(args.server, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                           token=read_token(args.token_file))
    with client:
        deterministic = client.predict(args.model, rows)
        mc = client.predict(args.model, rows, mc_samples=args.mc_samples, seed=args.seed)
    print(f"model {args.model} version {mc['version']} over TLS: deterministic | MC dropout, "
          f"T={args.mc_samples}, seed {mc['seed']}")
    print(f"{'row':>3} {'class':>6} | {'class':>6} {'mean p':>8} {'std':>8} {'mutual inf.':>11}")
    for b in range(len(rows)):
        c, k = deterministic["predicted_class"][b], mc["predicted_class"][b]
        print(f"{b:>3} {c:>6} | {k:>6} {mc['probabilities'][b, k]:>8.4f} {mc['std'][b, k]:>8.4f} "
              f"{mc['mutual_information'][b]:>11.4f}")


if __name__ == "__main__":
    main()
