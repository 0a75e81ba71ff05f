"""mc.onnx's ``first_sample`` input and the manifest's ``mc.sample_bytes``, for both exporters.

A run of T samples from t0 must draw exactly the noise of samples t0..t0+T-1 of a run from 0 (so
an engine can run T in chunks), and not feeding the input must be the run from 0 it always was.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from torch import nn

from dropnet import export_module
from dropnet.core.manifest import FIRST_SAMPLE_INPUT, MANIFEST_FILE, MC_FILE, Manifest
from dropnet.exporter.graphs import build_mc
from dropnet.server.sessions import sample_bytes
from tests.exporter.helpers import mc_feeds, network, rows, run, session
from tests.exporter.own.helpers import exported

NETS = {
    "mlp-paper": dict(hidden=[24, 16]),
    "mlp-gaussian-maxout": dict(hidden=[12, 8], activation="maxout", flavour="gaussian"),
    "conv-inverted-bn": dict(
        arch="conv", conv_channels=[4, 6], conv_kernel=3, hidden=[12], batch_norm=True, flavour="inverted"
    ),
}
FULL, FIRST, CHUNK = 10, 4, 3


def _from(feeds: dict[str, np.ndarray], first: int, samples: int) -> dict[str, np.ndarray]:
    return {**feeds, "num_samples": np.array(samples, np.int64), FIRST_SAMPLE_INPUT: np.array(first, np.int64)}


def _assert_chunk_is_a_slice(sess, feeds: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    """Every [T, …] output of a run from FIRST equals samples FIRST.. of the full run, bit for bit."""
    full = run(sess, **feeds)
    chunk = run(sess, **_from(feeds, FIRST, CHUNK))
    from_zero = run(sess, **_from(feeds, 0, FULL))
    per_sample = [name for name, value in full.items() if value.ndim >= 1 and value.shape[0] == FULL]
    assert "samples" in per_sample
    for name in per_sample:
        np.testing.assert_array_equal(chunk[name], full[name][FIRST : FIRST + CHUNK], err_msg=name)
    for name, value in full.items():  # first_sample 0 is the default: the run it always was
        np.testing.assert_array_equal(from_zero[name], value, err_msg=name)


@pytest.mark.parametrize("net", list(NETS))
def test_a_chunk_of_samples_draws_the_noise_of_those_samples_in_a_full_run(tmp_path: Path, net: str) -> None:
    model, spec = network(tmp_path, **NETS[net])
    feeds = mc_feeds(rows(spec, 3), FULL, [5, -2, 2**40])
    _assert_chunk_is_a_slice(session(build_mc(model, spec, {}, expose_internals=True)), feeds)


@pytest.mark.parametrize("name", ["functional", "transformer", "diabetes"])
def test_own_model_graphs_take_first_sample_too(name: str) -> None:
    _, x, graphs = exported(name)
    assert FIRST_SAMPLE_INPUT in [i.name for i in graphs.mc.graph.input]
    _assert_chunk_is_a_slice(session(graphs.mc), mc_feeds(x.numpy(), FULL, [7, 8, 9, 10]))


def test_the_reference_evaluator_reads_first_sample_as_onnxruntime_does(tmp_path: Path) -> None:
    model, spec = network(tmp_path, hidden=[12])
    proto = build_mc(model, spec, {}, expose_internals=True)
    feeds = _from(mc_feeds(rows(spec, 2), CHUNK, [3, 4]), FIRST, CHUNK)
    expected = run(session(proto), **feeds)
    names = [o.name for o in proto.graph.output]
    for name, value in zip(names, ReferenceEvaluator(proto).run(None, feeds)):
        if name.startswith("noise_"):
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
        else:
            np.testing.assert_allclose(value, expected[name], atol=1e-5, err_msg=name)


def _recorded(package: Path) -> Manifest:
    return Manifest.from_dict(json.loads((package / MANIFEST_FILE).read_text()), str(package))


def test_the_run_directory_exporter_records_sample_bytes(tiny_package: Path) -> None:
    manifest = _recorded(tiny_package)
    assert manifest.mc.sample_bytes == sample_bytes((tiny_package / MC_FILE).read_bytes(), MC_FILE, manifest.input)
    # At least what must exist per row and sample: each noisy site's mask and masked activations
    # (64 inputs, 16 + 16 hidden units, float32) and the C = 10 probabilities of the samples.
    assert manifest.mc.sample_bytes >= 4 * (2 * (64 + 16 + 16) + 10)


def test_the_own_model_exporter_records_sample_bytes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Dropout(0.25), nn.Linear(32, 2)).eval()
    package = export_module(module, torch.randn(4, 5), tmp_path / "pkg", name="own", task="regression")
    manifest = _recorded(package)
    assert manifest.mc.sample_bytes == sample_bytes((package / MC_FILE).read_bytes(), MC_FILE, manifest.input)
    assert manifest.mc.sample_bytes >= 4 * (2 * 32 + 2)  # the site's mask and masked activations, the output
