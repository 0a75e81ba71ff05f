"""The deployment recipes: the serving image's Dockerfile (run without a container engine) and the KServe manifests.

No container engine runs here, so the image's recipe is exercised step by step: a wheel of the
tree (tests/venvs.py), the Dockerfile's install step (deploy/install.sh) in a fresh venv that is
first on PATH, as /usr/local/bin is in the image, then the image's ENTRYPOINT + CMD with only the
models folder and the ports swapped for test ones, against a package the dev install exports with
the command docs/deploy.md shows. Its HEALTHCHECK command runs against it as written (port
swapped), and it is asked over gRPC and REST. The manifests are checked against KServe's
InferenceService CRD (vendored in deploy/schemas, unknown fields refused as the API server's strict
field validation does) and their containers against Kubernetes' core/v1 schema (kubernetes-validate).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dropnet.server.predictor import Predictor
from dropnet.server.process import ServeProcess
from tests.conftest import TINY_NAME
from tests.server.helpers import digits_rows
from tests.sources import REPO
from tests.venvs import PROJECT_FILES, build_wheel, pinned_versions

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
INSTALL_SCRIPT = "deploy/install.sh"
KSERVE = REPO / "deploy" / "kserve"
CRD = REPO / "deploy" / "schemas" / "serving.kserve.io_inferenceservices.yaml"
CRD_RECORD = REPO / "deploy" / "schemas" / "README.md"
KUBERNETES_VERSION = "1.34.0"
"""The Kubernetes API KServe 0.20 is built against (its go.mod pins k8s.io/api v0.34)."""
GUIDE_EXPORT = "dropnet export RUN_DIR --out models/NAME/1 --triton-repo triton"
"""docs/deploy.md's export command, which the recipe test runs (RUN_DIR and NAME filled in)."""
CUSTOM_PREDICTOR = KSERVE / "dropnet-custom-predictor.yaml"
TRITON = KSERVE / "dropnet-triton.yaml"
KSERVE_MODEL_MOUNT = "/mnt/models"
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri", "storage", "runtimeVersion"}
"""Fields of a predictor's ``model`` that are KServe's own; the rest are core/v1 Container fields."""
KSERVE_COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "model", "scaleMetric", "scaleTarget", "deploymentStrategy"}
"""Fields of a predictor that are KServe's own; the rest are core/v1 PodSpec fields."""


# --- the Dockerfile, read as the builder reads it -------------------------------------------------

@cache
def instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    logical, parts = [], []
    for line in DOCKERFILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            logical.append(" ".join(parts))
            parts = []
    return tuple((name.upper(), args) for name, args in (text.split(None, 1) for text in logical))


def arguments(instruction: str) -> list[str]:
    """The arguments of every ``instruction`` line, in order."""
    return [args for name, args in instructions() if name == instruction]


def exec_form(instruction: str) -> list[str]:
    """The JSON (exec-form) argument list of the one ``instruction`` (for HEALTHCHECK, what follows its CMD)."""
    (args,) = arguments(instruction)
    if instruction == "HEALTHCHECK":
        args = args.split(" CMD ", 1)[1]
    return json.loads(args)


def with_flags(command: list[str], values: dict[str, str]) -> list[str]:
    """``command`` with the value after each flag in ``values`` replaced; every flag must be there."""
    command = list(command)
    for flag, value in values.items():
        assert flag in command, f"{flag} not in {command}"
        command[command.index(flag) + 1] = value
    return command


def flag_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def healthcheck_port(command: list[str]) -> int:
    return int(re.search(r"http://127\.0\.0\.1:(\d+)/v2/health/ready", command[-1]).group(1))


def test_the_build_context_is_what_the_wheel_reads_and_the_install_script() -> None:
    allowed = {line.removeprefix("!").rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")}
    assert allowed == set(PROJECT_FILES) | {INSTALL_SCRIPT}
    copied = {source for args in arguments("COPY") for source in args.split()[:-1]}
    assert copied == set(PROJECT_FILES)
    assert f"source={INSTALL_SCRIPT}" in " ".join(arguments("RUN"))


def test_the_base_image_is_a_slim_python_of_this_interpreters_version() -> None:
    (default,) = arguments("ARG")
    assert default == f"PYTHON_IMAGE=python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    assert [args.split()[0] for args in arguments("FROM")] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    (user,) = arguments("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_the_image_serves_models_on_the_ports_it_exposes_and_probes() -> None:
    assert exec_form("ENTRYPOINT") == ["dropnet", "serve"]
    command = exec_form("CMD")
    assert flag_value(command, "--models") == "/models" and flag_value(command, "--host") == "0.0.0.0"
    assert "--insecure" in command
    ports = {int(flag_value(command, "--http-port")), int(flag_value(command, "--port"))}
    (exposed,) = arguments("EXPOSE")
    assert {int(port) for port in exposed.split()} == ports == {8080, 8081}
    assert healthcheck_port(exec_form("HEALTHCHECK")) == int(flag_value(command, "--http-port"))


# --- the recipe, run in a fresh venv ---------------------------------------------------------------

def free_port() -> int:
    """A TCP port free on every interface right now (the image binds 0.0.0.0)."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def image_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh venv (with pip, as the image's python has) after the image's install step."""
    work = tmp_path_factory.mktemp("image")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, capture_output=True)
    bin_dir = work / "venv" / "bin"
    (work / "constraints.txt").write_text("\n".join(pinned_versions()) + "\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PIP_CONSTRAINT": str(work / "constraints.txt"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(["sh", str(REPO / INSTALL_SCRIPT), str(build_wheel(work))], env=env, cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return bin_dir


@pytest.fixture(scope="module")
def model_store(tiny_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/`` and ``triton/`` as docs/deploy.md's export command writes them (the dev install exports)."""
    store = tmp_path_factory.mktemp("store")
    command = shlex.split(GUIDE_EXPORT.replace("NAME", TINY_NAME).replace("RUN_DIR", str(tiny_run_dir)))
    done = subprocess.run([sys.executable, "-m", "dropnet.cli", *command[1:]], cwd=store, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return store


@pytest.fixture(scope="module")
def image_server(image_bin: Path, model_store: Path) -> Iterator[dict[str, int]]:
    """The image's ENTRYPOINT + CMD run from the venv, on free ports, serving ``model_store/models``."""
    ports = {"grpc": free_port(), "http": free_port()}
    entrypoint = exec_form("ENTRYPOINT")
    flags = with_flags(exec_form("CMD"), {"--models": str(model_store / "models"), "--port": str(ports["grpc"]),
                                           "--http-port": str(ports["http"])})
    with ServeProcess(flags, command=[str(image_bin / entrypoint[0]), *entrypoint[1:]], cwd=model_store) as server:
        server.wait_serving()
        yield ports
        assert server.stop() == 0


@pytest.mark.slow
def test_the_healthcheck_passes_once_the_image_serves(image_bin: Path, image_server: dict[str, int]) -> None:
    command = exec_form("HEALTHCHECK")
    command[-1] = command[-1].replace(f":{healthcheck_port(command)}/", f":{image_server['http']}/")
    env = {**os.environ, "PATH": f"{image_bin}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_image_answers_grpc_health_and_inference_like_the_predictor(
    image_server: dict[str, int], model_store: Path
) -> None:
    target = f"127.0.0.1:{image_server['grpc']}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    x = digits_rows(3, seed=0)
    with triton_grpc.InferenceServerClient(target) as client:
        assert client.is_server_ready()
        tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(TINY_NAME, [tensor], parameters={"mc_samples": 8, "seed": 3})
    expected = Predictor.load(model_store / "models" / TINY_NAME / "1", device="cpu").predict(x, mc_samples=8, seed=3)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected.probabilities, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_the_image_answers_rest_as_it_answers_grpc(image_server: dict[str, int]) -> None:
    x = digits_rows(2, seed=1)
    answers = {}
    for api, port in ((triton_http, image_server["http"]), (triton_grpc, image_server["grpc"])):
        with api.InferenceServerClient(f"127.0.0.1:{port}") as client:
            assert client.is_server_ready()
            tensor = api.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            answers[api.__name__] = client.infer(TINY_NAME, [tensor], parameters={"mc_samples": 4, "seed": 5})
    np.testing.assert_array_equal(answers["tritonclient.http"].as_numpy("probabilities"),
                                  answers["tritonclient.grpc"].as_numpy("probabilities"))


@pytest.mark.slow
def test_the_triton_repository_has_both_models_at_its_top(model_store: Path) -> None:
    """What the Triton InferenceService's storageUri must hold: Triton's --model-store=/mnt/models is this folder."""
    for model in (TINY_NAME, f"{TINY_NAME}_mc"):
        assert (model_store / "triton" / model / "config.pbtxt").is_file()
        assert (model_store / "triton" / model / "1" / "model.onnx").is_file()


# --- the KServe manifests ---------------------------------------------------------------------------

def manifest(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@cache
def strict_crd_schema() -> dict[str, Any]:
    """The CRD's v1beta1 openAPIV3Schema, with unknown fields refused wherever the API server prunes them."""
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1beta1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    _refuse_unknown_fields(schema)
    return schema


def _refuse_unknown_fields(schema: Any) -> None:
    """Set ``additionalProperties: false`` on every object schema with fixed properties (in place)."""
    if isinstance(schema, list):
        for item in schema:
            _refuse_unknown_fields(item)
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key not in ("enum", "default"):
            _refuse_unknown_fields(value)
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False


def crd_errors(document: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
            for error in jsonschema.Draft7Validator(strict_crd_schema()).iter_errors(document)]


def pod_of(predictor: dict[str, Any], name: str) -> dict[str, Any]:
    """The core/v1 Pod a predictor's PodSpec fields (and its ``model``'s Container fields) describe."""
    spec = {key: value for key, value in predictor.items() if key not in KSERVE_COMPONENT_FIELDS}
    if "model" in predictor:
        container = {key: value for key, value in predictor["model"].items() if key not in KSERVE_MODEL_FIELDS}
        spec["containers"] = [{"name": "kserve-container", "image": "set-by-the-serving-runtime", **container}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_the_vendored_crd_is_the_recorded_upstream_file() -> None:
    recorded = re.search(r"git blob sha1 `([0-9a-f]{40})`", CRD_RECORD.read_text()).group(1)
    content = CRD.read_bytes()
    assert hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest() == recorded


@pytest.mark.parametrize("path", [CUSTOM_PREDICTOR, TRITON], ids=lambda path: path.name)
def test_the_manifest_is_a_valid_inference_service(path: Path) -> None:
    document = manifest(path)
    assert (document["apiVersion"], document["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert crd_errors(document) == []
    kubernetes_validate.validate(pod_of(document["spec"]["predictor"], document["metadata"]["name"]),
                                 KUBERNETES_VERSION, strict=True)


def test_the_schemas_refuse_a_misspelt_field() -> None:
    """The checks above are not vacuous: a field the API server would drop or refuse fails each one."""
    document = manifest(TRITON)
    document["spec"]["predictor"]["model"]["storageURI"] = document["spec"]["predictor"]["model"].pop("storageUri")
    assert crd_errors(document) == ["spec.predictor.model: Additional properties are not allowed ('storageURI' was "
                                    "unexpected)"]
    document = manifest(CUSTOM_PREDICTOR)
    document["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError, match="'8080' is not of type 'integer'"):
        kubernetes_validate.validate(pod_of(document["spec"]["predictor"], "typo"), KUBERNETES_VERSION, strict=True)


def test_the_custom_predictor_runs_the_images_command_on_kserves_ports_and_mount() -> None:
    (container,) = manifest(CUSTOM_PREDICTOR)["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["args"] == with_flags(exec_form("CMD"), {"--models": KSERVE_MODEL_MOUNT})
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    assert env["PROTOCOL"] == "v2" and env["STORAGE_URI"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http1": int(flag_value(container["args"], "--http-port")),
                     "h2c": int(flag_value(container["args"], "--port"))}
    assert container["ports"][0]["name"] == "http1"  # KServe maps the first port to the Service's port 80
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": ports["http1"]}


def test_the_triton_service_uses_kserves_triton_runtime_on_a_model_repository() -> None:
    model = manifest(TRITON)["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton" and model["runtime"] == "kserve-tritonserver"
    assert model["protocolVersion"] in ("v2", "grpc-v2") and model["storageUri"]


def test_the_deploy_guide_shows_the_export_command_the_recipe_test_runs() -> None:
    assert GUIDE_EXPORT in (REPO / "docs" / "deploy.md").read_text()
