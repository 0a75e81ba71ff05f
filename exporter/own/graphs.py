"""deterministic.onnx and mc.onnx of a marked network (see dropnet.exporter.own for the contract).

deterministic: the network with each marker replaced by the site's eval-mode value (identity, or
×p for dropnet's paper flavour), then the task's outputs.

mc: the network twice. The part that does not depend on any site ("once/") runs on the B rows.
The whole network is copied again ("tiled/") for the T·B rows (sample-major: row t·B + b is
sample t of row b): its input is x tiled T times, and every tensor the first part already
computed with the rows on its first axis is taken from there, tiled, instead of recomputed; the
copies this makes unnecessary are pruned, so what remains of "tiled/" is the part after the first
sites plus the shape arithmetic. At a site the activations [T·B·k, …] (or, straight from the first
part, [B·k, …]) are viewed as [T or 1, B, n] and multiplied by the site's noise [T, B, n]
(dropnet.exporter.rng, from the row seeds), or per channel as [T, B, C, rest] by [T, B, C, 1]; the hash
words of all the sites are computed side by side by one chain of nodes, since onnxruntime's cost
at these sizes is as much per node as per element. The network's output [T·B, D] is viewed as
[T, B, D] and reduced in the graph.
"""

from __future__ import annotations

import logging
from math import prod

from onnx import ModelProto, TensorProto, ValueInfoProto, helper

from dropnet.core.manifest import INPUT_NAME, NUM_SAMPLES_INPUT, SEED_INPUT
from dropnet.core.outputs import SAMPLES, Mode, Task
from dropnet.exporter.mc import classification_summaries
from dropnet.exporter.onnx_graph import GraphBuilder, merge_metadata, table_outputs
from dropnet.exporter.own.network import MarkedNetwork, prune
from dropnet.exporter.own.sites import Granularity, SiteInfo, eval_scale, keep_scale
from dropnet.exporter.rng import (
    COUNTER_LIMIT,
    RNG_SCHEME,
    CounterNoise,
    is_noiseless,
    site_noise,
    words_per_sample,
)

log = logging.getLogger(__name__)

BATCH, SEEDS = "batch", "seeds"
ONCE, TILED, NET = "once/", "tiled/", "net/"


def build_deterministic(
    proto: ModelProto, sites: list[SiteInfo], task: Task, width: int, metadata: dict[str, str]
) -> ModelProto:
    """deterministic.onnx: the eval-mode network and the task's deterministic outputs."""
    net = MarkedNetwork.read(proto)
    g = GraphBuilder()
    net.add_weights(g)

    def eval_value(site: int, _: str, x: str) -> str:
        scale = eval_scale(sites[site].call)
        return x if scale == 1.0 else g.op("Mul", x, g.f32(scale))

    names = net.emit(g, NET, range(len(net.graph.node)), {net.input: INPUT_NAME}, eval_value)
    y = net.resolved(names, NET, net.output)
    if task is Task.CLASSIFICATION:
        g.op("Softmax", _output_as(g, y, "logits"), axis=-1, out="probabilities")
    else:
        _output_as(g, y, "prediction")
    return _model(g, net, task, Mode.DETERMINISTIC, width, merge_metadata(metadata, {"graph": "deterministic"}))


def build_mc(proto: ModelProto, sites: list[SiteInfo], task: Task, width: int, metadata: dict[str, str]) -> ModelProto:
    """mc.onnx: T samples of the network with its dropout sites active, and their reductions."""
    net = MarkedNetwork.read(proto)
    g = GraphBuilder()
    net.add_weights(g)
    with g.scope("rows"):
        samples = g.op("Reshape", NUM_SAMPLES_INPUT, g.i64([1]))
        rows = g.op("Gather", g.op("Shape", INPUT_NAME), g.i64(0), axis=0)
        noise = CounterNoise(g, SEED_INPUT, NUM_SAMPLES_INPUT, rows)
    noisy = [s for s in sites if not is_noiseless(s.call.retain, s.call.flavour)]
    with g.scope("sites.hash"):
        words = noise.words({s.index: words_per_sample(s.units, s.call.retain, s.call.flavour) for s in noisy})
    after = net.after_sites()
    before = [p for p in range(len(net.graph.node)) if p not in after]
    once = net.emit(g, ONCE, before, {net.input: INPUT_NAME}, _no_marker)
    shared = _shared_rows(net, after, once)
    with g.scope("tile"):
        tiled = {name: _tile(g, source, rank, samples) for name, (source, rank) in shared.items()}

    def sample(site: int, exported: str, copied: str) -> str:
        info = sites[site]
        if site not in words:
            scale = keep_scale(info.call)
            return copied if scale == 1.0 else g.op("Mul", copied, g.f32(scale))
        if exported in shared:
            return _noisy(g, words[site], info, shared[exported][0], None)
        return _noisy(g, words[site], info, copied, samples)

    names = net.emit(g, TILED, range(len(net.graph.node)), tiled, sample)
    with g.scope("summaries"):
        y = net.resolved(names, TILED, net.output)
        per_sample = g.op("Reshape", y, g.op("Concat", samples, g.i64([-1, width]), axis=0))
        _summarise(g, task, per_sample)
    widest = max(words_per_sample(s.units, s.call.retain, s.call.flavour) for s in sites)
    own = {"graph": "mc", "rng_scheme": RNG_SCHEME, "rng_max_samples": str(COUNTER_LIMIT // widest)}
    model = _model(g, net, task, Mode.MC, width, merge_metadata(metadata, own), noise.first_sample_input)
    log.info("mc graph: %d nodes; %d of the network's %d run once per row", len(g.nodes), len(before),
             len(net.graph.node))
    return model


def _no_marker(site: int, _: str, __: str) -> str:
    raise AssertionError(f"site {site} in the part before the sites")  # after_sites() holds every marker


def _shared_rows(net: MarkedNetwork, after: set[int], once: dict[str, str]) -> dict[str, tuple[str, int]]:
    """The input, and the tensors the first part computed that the rest reads with the rows on their
    first axis: exported name -> (name in the first part, rank)."""
    produced = {name for p, node in enumerate(net.graph.node) if p not in after for name in node.output}
    shared = {net.input: (INPUT_NAME, len(net.graph.input[0].type.tensor_type.shape.dim))}
    for position in sorted(after):
        for name in net.graph.node[position].input:
            rank = net.rows_first(name) if name in produced else None
            if rank is not None:
                shared[name] = (net.resolved(once, ONCE, name), rank)
    return shared


def _tile(g: GraphBuilder, x: str, rank: int, samples: str) -> str:
    """x [B, …] repeated T times along the first axis: [T·B, …], sample-major."""
    return g.op("Tile", x, g.op("Concat", samples, g.i64([1] * (rank - 1)), axis=0))


def _noisy(g: GraphBuilder, words: str, site: SiteInfo, x: str, samples: str | None) -> str:
    """x [T·B·k, …] times the site's noise [T, B, n] drawn from its hash ``words``: [T·B·k, …].

    ``samples``: [T]; None where x comes from the part before the sites, [B·k, …]. The keep scale
    1/p goes on x when it has no sample axis, else on the noise (bit for bit the same product).
    """
    call, units = site.call, site.units
    lead = g.i64([1]) if samples is None else samples
    with g.scope(f"site{site.index}.draw"):
        factor, kind = site_noise(g, words, call.flavour, call.retain, units)
        if kind != TensorProto.FLOAT:
            factor = g.op("Cast", factor, to=TensorProto.FLOAT)
    with g.scope(f"site{site.index}.apply"):
        scale = keep_scale(call)
        if scale != 1.0 and samples is None:
            x = g.op("Mul", x, g.f32(scale))
        elif scale != 1.0:
            factor = g.op("Mul", factor, g.f32(scale))
        if call.granularity is Granularity.CHANNEL:
            rest = prod(site.shape[2:])
            grouped = g.op("Reshape", x, g.op("Concat", lead, g.i64([-1, units, rest]), axis=0))
            factor = g.op("Unsqueeze", factor, g.i64([-1]))
        else:
            grouped = g.op("Reshape", x, g.op("Concat", lead, g.i64([-1, units]), axis=0))
        return g.op("Reshape", g.op("Mul", grouped, factor), g.i64([-1, *site.shape[1:]]))


def _summarise(g: GraphBuilder, task: Task, per_sample: str) -> None:
    """The task's MC outputs from the samples [T, B, D] (classification: logits)."""
    if task is Task.CLASSIFICATION:
        classification_summaries(g, per_sample)
        return
    first = g.i64([0])
    samples = _output_as(g, per_sample, SAMPLES)
    mean = g.op("ReduceMean", samples, first, keepdims=0, out="mean")
    spread = g.op("Sub", samples, mean)
    g.op("Sqrt", g.op("ReduceMean", g.op("Mul", spread, spread), first, keepdims=0), out="std")


def _output_as(g: GraphBuilder, x: str, name: str) -> str:
    """``x`` renamed ``name`` (a graph output) where a node of ``g`` computes it, else an Identity
    (x is the input or a weight): an Identity is one more node to run per call."""
    if not any(x in node.output for node in g.nodes):
        return g.op("Identity", x, out=name)
    for node in g.nodes:
        for names in (node.input, node.output):
            for position, value in enumerate(names):
                if value == x:
                    names[position] = name
    return name


def _model(
    g: GraphBuilder, net: MarkedNetwork, task: Task, mode: Mode, width: int, metadata: dict[str, str],
    first_sample: ValueInfoProto | None = None,
) -> ModelProto:
    """The model of ``g`` with the contract's inputs and the output table's outputs, pruned.

    ``first_sample``: mc.onnx's overridable input of the first sample's index (CounterNoise's).
    """
    outputs = table_outputs(task, mode, {"B": BATCH, "T": NUM_SAMPLES_INPUT, "C": width, "D": width})
    source = net.graph.input[0].type.tensor_type
    shape = [BATCH, *(d.dim_value for d in source.shape.dim[1:])]
    inputs = [helper.make_tensor_value_info(INPUT_NAME, source.elem_type, shape)]
    if mode is Mode.MC:
        inputs += [
            helper.make_tensor_value_info(NUM_SAMPLES_INPUT, TensorProto.INT64, []),
            helper.make_tensor_value_info(SEED_INPUT, TensorProto.INT64, [SEEDS]),
        ]
    if first_sample is not None:
        inputs.append(first_sample)
    prune(g, [o.name for o in outputs] + [i.name for i in inputs])  # inputs: keeps first_sample's initializer
    return g.model(f"dropnet_own_{mode.value}", inputs, outputs, metadata, __doc__ or "")
