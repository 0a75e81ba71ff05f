"""Regenerate the Python modules of the .proto files: ``python -m dropnet.protos.generate``.

The .proto files under ``protos/`` are the source of truth; the generated ``*_pb2.py``,
``*_pb2.pyi`` and ``*_pb2_grpc.py`` beside them are committed, and a test fails when they
differ from a fresh generation. Two fixes are applied to protoc's output:

- imports and module names gain the ``dropnet.protos.`` prefix, so ``dropnet/v1/predictor.proto``
  becomes ``dropnet.protos.dropnet.v1.predictor_pb2`` and never shadows the ``dropnet`` package;
- the OIP file registers its descriptors in a private pool, because tritonclient and KServe
  ship their own modules defining the same ``inference.*`` symbols, and the default pool
  refuses a symbol defined twice.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

PROTOS_DIR = Path(__file__).resolve().parent
PACKAGE = "dropnet.protos"  # the installed import name of this folder
PROTO_FILES = ("dropnet/v1/predictor.proto", "inference/grpc_service.proto")
PRIVATE_POOL_FILES = ("inference/grpc_service.proto",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_DEFAULT_POOL = "_descriptor_pool.Default()"
_PRIVATE_POOL = "_POOL"

logger = logging.getLogger(__name__)


def generated_files(proto: str) -> list[str]:
    """Paths, relative to ``protos/``, of the modules generated from ``proto``."""
    stem = proto.removesuffix(".proto")
    return [stem + suffix for suffix in GENERATED_SUFFIXES]


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules of every .proto file under ``out_dir``; return their paths."""
    from grpc_tools import protoc  # dev dependency, needed only here

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as raw_dir:
        args = [
            "protoc", f"-I{PROTOS_DIR}",
            f"--python_out={raw_dir}", f"--pyi_out={raw_dir}", f"--grpc_python_out={raw_dir}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_FILES}")
        written = []
        for proto in PROTO_FILES:
            for rel in generated_files(proto):
                text = _fix(Path(raw_dir, rel).read_text(), private_pool=proto in PRIVATE_POOL_FILES)
                target = out_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                written.append(target)
    return written


def _fix(text: str, private_pool: bool) -> str:
    """Prefix imports and module names with the package; optionally use a private pool."""
    for proto in PROTO_FILES:
        module = proto.removesuffix(".proto").replace("/", ".") + "_pb2"
        parent = module.rpartition(".")[0]
        text = text.replace(f"from {parent} import ", f"from {PACKAGE}.{parent} import ")
        text = text.replace(f"'{module}'", f"'{PACKAGE}.{module}'")
    if private_pool:
        if text.count(_DEFAULT_POOL) > 1:
            raise RuntimeError("unexpected protoc output: more than one default-pool registration")
        text = text.replace(
            f"DESCRIPTOR = {_DEFAULT_POOL}",
            f"{_PRIVATE_POOL} = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = {_PRIVATE_POOL}",
        )
    return text


def main(argv: list[str] | None = None) -> int:
    """Regenerate into ``protos/`` (or ``--out DIR``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTOS_DIR, help="output directory (default: protos/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in generate(args.out):
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
