"""Every consumer of the output table agrees with it, and the Predictor and the data plane share one request path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import descriptor_pb2

from dropnet.core.errors import InvalidInputError
from dropnet.core.outputs import OUTPUT_TABLE, Mode, Task, default_output_names, graph_output_names, rows_axis
from dropnet.protos import generate
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.server import codecs
from dropnet.server.cli_predict import format_table
from dropnet.server.dataplane import DataPlane, InferRequest, ModelInfo
from dropnet.server.predictor import Predictor
from dropnet.server.request import check_request
from dropnet.server.tensors import V1_DTYPES
from tests.server.helpers import MODEL, digits_rows, make_settings

CLASSIFICATION = OUTPUT_TABLE[Task.CLASSIFICATION]
SIZES = {"C": 10}


def _table(mode: Mode) -> list[tuple[str, str, list[int]]]:
    return [(spec.name, spec.dtype, spec.dims(SIZES)) for spec in CLASSIFICATION[mode]]


def test_the_rows_axis_of_each_output_is_the_same_wherever_it_appears() -> None:
    for modes in OUTPUT_TABLE.values():
        for specs in modes.values():
            for spec in specs:
                assert spec.shape.index("B") == rows_axis(spec.name), spec.name


def test_both_codecs_describe_the_outputs_of_the_table(tiny_predictor: Predictor) -> None:
    model = ModelInfo(MODEL, "1", ("1",), tiny_predictor.manifest, 1000)
    described = codecs.encode_model(model)
    for mode, specs in ((Mode.DETERMINISTIC, described.deterministic_outputs), (Mode.MC, described.mc_outputs)):
        assert [(s.name, str(V1_DTYPES[s.dtype]), list(s.shape)) for s in specs] == _table(mode)
    metadata = codecs.encode_model_metadata(model)
    oip = {o.name: (o.datatype, list(o.shape)) for o in metadata.outputs}
    table = {name: (codecs.oip_datatype(np.dtype(dtype)), dims) for mode in Mode for name, dtype, dims in _table(mode)}
    assert list(oip) == list(table) and oip == table


def test_the_exported_graphs_produce_the_table_outputs(tiny_package: Path) -> None:
    for mode, file_name in ((Mode.DETERMINISTIC, "deterministic.onnx"), (Mode.MC, "mc.onnx")):
        session = ort.InferenceSession(str(tiny_package / file_name), providers=["CPUExecutionProvider"])
        assert tuple(o.name for o in session.get_outputs()) == graph_output_names(Task.CLASSIFICATION, mode)
        assert {o.type for o in session.get_outputs()} == {"tensor(float)"}


def test_the_engine_and_the_cli_answer_with_the_table_outputs(tiny_predictor: Predictor) -> None:
    x = digits_rows(2, seed=0)
    deterministic, mc = tiny_predictor.predict(x), tiny_predictor.predict(x, mc_samples=4, seed=1)
    assert tuple(deterministic.outputs) == default_output_names(Task.CLASSIFICATION, Mode.DETERMINISTIC)
    assert tuple(mc.outputs) == default_output_names(Task.CLASSIFICATION, Mode.MC)
    for name, value in mc.outputs.items():
        spec = next(spec for spec in CLASSIFICATION[Mode.MC] if spec.name == name)
        assert (value.dtype, list(value.shape)) == (np.dtype(spec.dtype), spec.dims({**SIZES, "B": 2}))
    header = format_table(tiny_predictor, mc, 4).splitlines()[1].split()
    assert header == ["row", "label"] + [spec.column for spec in CLASSIFICATION[Mode.MC] if spec.column]


def test_the_proto_documents_each_output_as_the_table_does(tmp_path: Path) -> None:
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    proto = "dropnet/v1/predictor.proto"
    assert protoc.main(["protoc", f"-I{generate.PROTOS_DIR}", "--include_source_info", f"--descriptor_set_out={out}",
                        proto]) == 0
    (file,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    message = [i for i, m in enumerate(file.message_type) if m.name == "PredictResponse"][0]
    fields = file.message_type[message].field
    comments = {
        fields[loc.path[3]].name: " ".join(loc.leading_comments.split())
        for loc in file.source_code_info.location if tuple(loc.path[:3]) == (4, message, 2) and len(loc.path) == 4
    }
    words = {"B": "rows", "C": "classes", "D": "targets", "T": "mc_samples"}
    documented: dict[str, tuple[str, list[dict[str, None]]]] = {}  # name → dtype, the words of each dimension
    for spec in (spec for modes in OUTPUT_TABLE.values() for specs in modes.values() for spec in specs):
        assert v1.PredictResponse.DESCRIPTOR.fields_by_name[spec.name].message_type is v1.Tensor.DESCRIPTOR
        dtype, dims = documented.setdefault(spec.name, (spec.dtype, [{} for _ in spec.shape]))
        assert (dtype, len(dims)) == (spec.dtype, len(spec.shape)), spec.name
        for dim, symbol in zip(dims, spec.shape):
            dim[words[symbol]] = None
    for name, (dtype, dims) in documented.items():  # an output of both tasks: "[rows, classes or targets]"
        assert comments[name].startswith(f"{dtype} [{', '.join(' or '.join(dim) for dim in dims)}]:"), name


BAD_REQUESTS: list[dict[str, Any]] = [
    {"mode": "bayes"},
    {"outputs": ("logits", "bogus")},
    {"outputs": ("samples",)},
    {"mc_samples": 5},
    {"seed": 5},
    {"mode": "mc", "mc_samples": 0},
    {"mode": "mc", "mc_samples": 51},
    {"mode": "mc", "mc_samples": 2.5},
    {"mode": "mc", "seed": 2**63},
    {"mode": "mc", "outputs": ("logits",)},
    {"x": np.zeros((2, 8, 8))},
    {"x": np.full((1, 1, 8, 8), np.inf)},
    {"x": digits_rows(5, seed=0)},
]


@pytest.mark.parametrize("fields", BAD_REQUESTS)
def test_the_predictor_and_the_data_plane_refuse_a_request_with_the_same_check(
    models_dir: Path, fields: dict[str, Any]
) -> None:
    request = {"x": digits_rows(1, seed=0), **fields}
    settings = {"max_mc_samples": 50, "max_rows_per_request": 4}

    async def served() -> str:
        plane = DataPlane(make_settings(models_dir, **settings))
        await plane.start()
        try:
            with pytest.raises(InvalidInputError) as refused:
                await plane.infer(InferRequest(MODEL, None, **request))
            return str(refused.value)
        finally:
            await plane.stop()

    predictor = Predictor.load(models_dir / MODEL / "1", max_mc_samples=settings["max_mc_samples"])
    with pytest.raises(InvalidInputError) as embedded:
        check_request(predictor, **request, max_rows=settings["max_rows_per_request"])
    assert asyncio.run(served()) == str(embedded.value)
