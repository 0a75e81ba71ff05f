"""mc.onnx: Monte-Carlo dropout — T noisy forward passes and their summaries in one run.

Inputs: ``x`` float32 [batch, *shape]; ``num_samples`` int64 scalar T (>= 1); ``seed`` int64
[1] or [B]: one seed S for the batch (row b then uses ``dropnet.core.seeding.row_seeds(S, B)[b]``)
or one seed per row; both agree for B = 1, and any other length is refused when run. ``seed``
is rank 1, not "scalar or vector": the ONNX checker requires a shape on every graph input (an
unknown-rank input fails ``check_model``) and onnxruntime refuses inputs of another rank.
``first_sample`` int64 scalar t0, an overridable initializer holding 0: the run draws samples
t0..t0+T-1 of the seed's noise (dropnet.exporter.rng.CounterNoise), so T samples can be run in chunks.
Outputs: the MC classification rows of the output table (``dropnet.core.outputs``) the graph
computes: ``probabilities`` [B, C] (the mean of the samples), ``std`` [B, C] (population std
over samples), ``predictive_entropy`` [B] (entropy of the mean, nats), ``mutual_information``
[B] (BALD: predictive entropy minus the mean per-sample entropy, clamped at 0) and ``samples``
[T, B, C] (each sample's softmax).

Layout: activations stay [B, *features] up to the first noisy dropout site, so layers before it
(e.g. the first Linear when the input has p = 1) run once per row and are shared by all samples.
At a site the activations are viewed as [T or 1, B, n] and multiplied by noise [T, B, n]
(broadcasting tiles them), then flattened to [T·B, *features] for the next Gemm/Conv. Noise
per flavour (dropnet.exporter.rng): paper keeps units with probability p, unscaled weights, so that
E[mc] of a layer equals deterministic.onnx's; inverted keeps with probability p and the 1/p is
folded into the next layer's weights; gaussian multiplies by N(1, (1-p)/p). Standardize runs
before the input noise (mask·(x - m)/s) and batch norm uses its eval statistics, folded.
"""

from __future__ import annotations

from math import prod

from onnx import ModelProto, TensorProto, helper
from torch import nn

from dropnet.core.manifest import INPUT_NAME, NUM_SAMPLES_INPUT, SEED_INPUT
from dropnet.core.outputs import SAMPLES, Mode, Task
from dropnet.exporter.layers import emit_layer
from dropnet.exporter.onnx_graph import GraphBuilder, merge_metadata, table_outputs
from dropnet.exporter.rng import (
    COUNTER_LIMIT,
    RNG_SCHEME,
    CounterNoise,
    is_noiseless,
    site_noise,
    words_per_sample,
)
from dropnet.exporter.steps import Affine, Noise, Step, fold_affines, output_features, read_network
from dropnet.trainer.models import InputSpec

GRAPH_NAME = "dropnet_mc"
BATCH = "batch"
SEEDS = "seeds"
TINY = 1.1754944e-38
"""Smallest normal float32: the floor under probabilities before taking their log (0·log 0 = 0)."""


def build_mc(
    model: nn.Sequential, spec: InputSpec, metadata: dict[str, str], *, expose_internals: bool = False
) -> ModelProto:
    """mc.onnx of ``model`` (see the module docstring).

    ``expose_internals`` (for tests) adds outputs ``logit_samples`` [T, B, C] and, per noisy site s,
    ``noise_s`` [T, B, n_s]: the keep mask (bool) or the gaussian multiplier (float).
    """
    steps = fold_affines(_stochastic(read_network(model, spec)))
    classes = output_features(steps)
    g = GraphBuilder()
    with g.scope("rows"):
        samples_1d = g.op("Reshape", NUM_SAMPLES_INPUT, g.i64([1]))
        rows = g.op("Gather", g.op("Shape", INPUT_NAME), g.i64(0), axis=0)
        noise = CounterNoise(g, SEED_INPUT, NUM_SAMPLES_INPUT, rows)
    sites = [step for step in steps if isinstance(step, Noise)]
    with g.scope("sites.hash"):
        words = noise.words({s.site: words_per_sample(prod(s.features), s.retain, s.flavour) for s in sites})
    exposed: list[helper.ValueInfoProto] = []
    activations, tiled = INPUT_NAME, False
    for position, step in enumerate(steps):
        if not isinstance(step, Noise):
            with g.scope(f"layer{position}"):
                activations = emit_layer(g, step, activations)
            continue
        lead = samples_1d if tiled else g.i64([1])
        activations, values, kind = _noise_site(g, words[step.site], step, activations, lead)
        tiled = True
        if expose_internals:
            name = g.op("Identity", values, out=f"noise_{step.site}")
            exposed.append(helper.make_tensor_value_info(name, kind, [NUM_SAMPLES_INPUT, BATCH, prod(step.features)]))
    with g.scope("summaries"):
        lead = samples_1d if tiled else g.i64([1])
        logits = g.op("Reshape", activations, g.op("Concat", lead, g.i64([-1, classes]), axis=0))
        if not tiled:
            logits = g.op("Expand", logits, g.op("Concat", samples_1d, g.i64([1, 1]), axis=0))
        if expose_internals:
            g.op("Identity", logits, out="logit_samples")
            exposed.append(
                helper.make_tensor_value_info("logit_samples", TensorProto.FLOAT, [NUM_SAMPLES_INPUT, BATCH, classes])
            )
        classification_summaries(g, logits)
    outputs = table_outputs(Task.CLASSIFICATION, Mode.MC, {"B": BATCH, "C": classes, "T": NUM_SAMPLES_INPUT})
    inputs = [
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH, *spec.shape]),
        helper.make_tensor_value_info(NUM_SAMPLES_INPUT, TensorProto.INT64, []),
        helper.make_tensor_value_info(SEED_INPUT, TensorProto.INT64, [SEEDS]),
        noise.first_sample_input,
    ]
    own = {"graph": "mc", "rng_scheme": RNG_SCHEME, "rng_max_samples": str(_max_samples(sites))}
    return g.model(GRAPH_NAME, inputs, outputs + exposed, merge_metadata(metadata, own), __doc__ or "")


def _noise_site(g: GraphBuilder, words: str, step: Noise, activations: str, lead: str) -> tuple[str, str, int]:
    """Multiply activations [lead·B, *features] by the site's noise [T, B, n], drawn from its hash
    ``words``; ``lead`` is [T] or [1].

    Returns the noisy activations [T·B, *features], the noise (bool keep mask or float multiplier)
    and its element type.
    """
    units = prod(step.features)
    with g.scope(f"site{step.site}.draw"):
        values, kind = site_noise(g, words, step.flavour, step.retain, units)
    with g.scope(f"site{step.site}.apply"):
        grouped = g.op("Reshape", activations, g.op("Concat", lead, g.i64([-1, units]), axis=0))
        factor = values if kind == TensorProto.FLOAT else g.op("Cast", values, to=TensorProto.FLOAT)
        noisy = g.op("Reshape", g.op("Mul", grouped, factor), g.i64([-1, *step.features]))
    return noisy, values, kind


def _stochastic(steps: list[Step]) -> list[Step]:
    """Noiseless sites dropped; an inverted site's 1/p moved into the next layer's weights."""
    kept: list[Step] = []
    for step in steps:
        if isinstance(step, Noise) and is_noiseless(step.retain, step.flavour):
            continue
        kept.append(step)
        if isinstance(step, Noise) and step.flavour == "inverted":
            kept.append(Affine(1.0 / step.retain))
    return kept


def classification_summaries(g: GraphBuilder, logits: str) -> None:
    """The MC classification outputs of the output table, from the sample logits [T, B, C].

    Adds ``samples`` (each sample's softmax), ``probabilities`` (their mean over T), ``std``
    (population std over T), ``predictive_entropy`` (entropy of the mean, nats) and
    ``mutual_information`` (BALD: predictive entropy minus the mean per-sample entropy, clamped
    at 0). Shared by the MC graphs of dropnet's own networks and of users' modules.
    """
    first = g.i64([0])
    samples = g.op("Softmax", logits, axis=-1, out=SAMPLES)
    mean = g.op("ReduceMean", samples, first, keepdims=0, out="probabilities")
    spread = g.op("Sub", samples, mean)
    g.op("Sqrt", g.op("ReduceMean", g.op("Mul", spread, spread), first, keepdims=0), out="std")
    entropy = _entropy(g, mean, out="predictive_entropy")
    mean_entropy = g.op("ReduceMean", _entropy(g, samples), first, keepdims=0)
    g.op("Max", g.op("Sub", entropy, mean_entropy), g.f32(0.0), out="mutual_information")


def _entropy(g: GraphBuilder, probabilities: str, out: str | None = None) -> str:
    """-Σ p·log p over the last axis, in nats (0·log 0 = 0)."""
    log_p = g.op("Log", g.op("Max", probabilities, g.f32(TINY)))
    return g.op("Neg", g.op("ReduceSum", g.op("Mul", probabilities, log_p), g.i64([-1]), keepdims=0), out=out)


def _max_samples(sites: list[Noise]) -> int:
    """Largest T for which every site's counters are distinct (see dropnet.exporter.rng)."""
    widest = max((words_per_sample(prod(s.features), s.retain, s.flavour) for s in sites), default=1)
    return COUNTER_LIMIT // widest
