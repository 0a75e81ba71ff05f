"""The .proto files and their generated modules: committed code is fresh, OIP is wire-compatible, docs are complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as tritonclient_grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from dropnet.protos import generate
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1
from dropnet.protos.inference import grpc_service_pb2 as oip
from dropnet.core.outputs import Mode, Task, output_names

triton = tritonclient_grpc.service_pb2


def test_committed_modules_match_a_fresh_generation(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert len(written) == len(generate.PROTO_FILES) * len(generate.GENERATED_SUFFIXES)
    for path in written:
        rel = path.relative_to(tmp_path)
        committed = generate.PROTOS_DIR / rel
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run python -m dropnet.protos.generate"


def _proto(descriptor) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    return proto


def _wire_facts(message: descriptor_pb2.DescriptorProto) -> dict:
    """Everything about a message that reaches the wire or the generated API (not comments)."""
    return {
        "fields": sorted(
            (f.name, f.number, f.type, f.label, f.type_name, f.oneof_index if f.HasField("oneof_index") else None)
            for f in message.field
        ),
        "oneofs": [o.name for o in message.oneof_decl],
        "nested": {nested.name: _wire_facts(nested) for nested in message.nested_type},
        "map_entry": message.options.map_entry,
    }


@pytest.mark.parametrize("name", sorted(oip.DESCRIPTOR.message_types_by_name))
def test_oip_message_matches_the_standard(name: str) -> None:
    ours = oip.DESCRIPTOR.message_types_by_name[name]
    standard = triton.DESCRIPTOR.message_types_by_name[name]
    assert ours.full_name == standard.full_name
    assert _wire_facts(_proto(ours)) == _wire_facts(_proto(standard))


def test_oip_service_matches_the_standard() -> None:
    ours = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    standard = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == standard.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in ours.methods} >= {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    }
    for method in ours.methods:
        theirs = standard.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            theirs.input_type.full_name, theirs.output_type.full_name,
        )
        assert not (method.client_streaming or method.server_streaming)


def test_oip_messages_interoperate_with_tritonclient_in_one_process() -> None:
    request = oip.ModelInferRequest(model_name="m", raw_input_contents=[b"\x00\x00\x80?"])
    request.parameters["seed"].int64_param = -5
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    theirs = triton.ModelInferRequest.FromString(request.SerializeToString())
    assert theirs.parameters["seed"].int64_param == -5
    assert list(theirs.inputs[0].shape) == [1, 1] and theirs.raw_input_contents[0] == b"\x00\x00\x80?"
    assert oip.DESCRIPTOR.pool is not descriptor_pool.Default()  # else tritonclient's module would clash


def _undocumented(proto_file: str, tmp_path: Path) -> list[str]:
    """Fields, enum values and RPCs of ``proto_file`` without a leading comment."""
    from grpc_tools import protoc

    out = tmp_path / "set.pb"
    args = ["protoc", f"-I{generate.PROTOS_DIR}", "--include_source_info", f"--descriptor_set_out={out}", proto_file]
    assert protoc.main(args) == 0
    (file,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    documented = {tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip()}
    missing = []

    def visit_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str) -> None:
        if message.options.map_entry:
            return
        missing.extend(f"{name}.{f.name}" for i, f in enumerate(message.field) if path + (2, i) not in documented)
        for i, nested in enumerate(message.nested_type):
            visit_message(nested, path + (3, i), f"{name}.{nested.name}")

    for i, message in enumerate(file.message_type):
        visit_message(message, (4, i), message.name)
    for i, enum in enumerate(file.enum_type):
        missing.extend(f"{enum.name}.{v.name}" for j, v in enumerate(enum.value) if (5, i, 2, j) not in documented)
    for i, service in enumerate(file.service):
        missing.extend(
            f"{service.name}.{m.name}" for j, m in enumerate(service.method) if (6, i, 2, j) not in documented
        )
    return missing


@pytest.mark.parametrize("proto_file", generate.PROTO_FILES)
def test_every_field_enum_value_and_rpc_is_documented(proto_file: str, tmp_path: Path) -> None:
    assert _undocumented(proto_file, tmp_path) == []


def test_v1_seed_is_optional_and_tensors_are_typed() -> None:
    assert v1.PredictRequest.DESCRIPTOR.fields_by_name["seed"].has_presence
    assert not v1.PredictRequest().HasField("seed")
    assert v1.PredictRequest(seed=0).HasField("seed")
    assert set(v1.Mode.keys()) == {"MODE_UNSPECIFIED", "MODE_DETERMINISTIC", "MODE_MC_DROPOUT"}
    outputs = {f.name for f in v1.PredictResponse.DESCRIPTOR.fields if f.message_type is v1.Tensor.DESCRIPTOR}
    assert outputs == {name for task in Task for mode in Mode for name in output_names(task, mode)}


V1_FIELD_NUMBERS = {
    "PredictResponse": {
        "model": 1, "version": 2, "seed": 3, "probabilities": 4, "predicted_class": 5, "logits": 6, "std": 7,
        "predictive_entropy": 8, "mutual_information": 9, "samples": 10, "prediction": 11, "mean": 12,
    },
    "GetModelResponse": {
        "name": 1, "version": 2, "input": 3, "value_range": 4, "normalisation": 5, "classes": 6, "dropout": 7,
        "max_norm": 8, "metrics": 9, "onnx": 10, "mc": 11, "deterministic_outputs": 12, "mc_outputs": 13,
        "manifest_json": 14, "task": 15, "targets": 16,
    },
}
"""Field numbers of the dropnet.v1 responses: released numbers never change, new fields get new ones."""


@pytest.mark.parametrize("message", sorted(V1_FIELD_NUMBERS))
def test_v1_field_numbers_are_stable(message: str) -> None:
    fields = v1.DESCRIPTOR.message_types_by_name[message].fields
    assert {field.name: field.number for field in fields} == V1_FIELD_NUMBERS[message]
