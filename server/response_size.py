"""The size of a response, estimated from the checked request before any work is done.

A response over ``max_message_bytes`` cannot be sent, and finding that out after the run wastes the
run (an MC request's ``samples`` output alone is T × rows × C floats). :func:`check_response_size`
refuses such a request first, with RESOURCE_EXHAUSTED naming the estimate, the limit and what to
change. It knows no protocol: the estimate is an upper bound of what either gRPC encoding takes,

- the values: a float takes its itemsize in every encoding (raw bytes, ``dropnet.v1`` Tensor.data,
  OIP's packed fp32_contents), an integer at most :data:`MAX_INTEGER_BYTES` (8 raw; a varint of
  OIP's packed int64_contents takes up to 10);
- :data:`TENSOR_OVERHEAD_BYTES` per output: its name, datatype and shape, field tags and length
  prefixes (the output table's names are short and its shapes have at most 3 dimensions);
- :data:`RESPONSE_OVERHEAD_BYTES` per response for the seed and the message's own tags, plus the
  model name and version and what the protocol echoes from the request (OIP's ``id``), counted
  exactly by the caller.
"""

from __future__ import annotations

import math

import numpy as np

from dropnet.core.errors import ResourceExhaustedError
from dropnet.core.manifest import Manifest
from dropnet.core.outputs import SAMPLES
from dropnet.server.request import CheckedRequest

MAX_INTEGER_BYTES = 10
"""Most bytes one integer value takes in either encoding (a 64-bit varint)."""
TENSOR_OVERHEAD_BYTES = 128
"""Allowance per output tensor for what surrounds its values."""
RESPONSE_OVERHEAD_BYTES = 256
"""Allowance per response for the seed and the message's field tags and lengths."""


def output_bytes(manifest: Manifest, checked: CheckedRequest) -> dict[str, tuple[list[int], int]]:
    """Each requested output's shape and the most bytes its values take on the wire."""
    sizes = {**manifest.sizes(), "B": int(checked.x.shape[0]), "T": checked.num_samples}
    wanted = set(checked.outputs)
    result: dict[str, tuple[list[int], int]] = {}
    for spec in manifest.outputs(checked.mode):
        if spec.name in wanted:
            dims = spec.dims(sizes)
            dtype = np.dtype(spec.dtype)
            per_value = dtype.itemsize if dtype.kind == "f" else max(dtype.itemsize, MAX_INTEGER_BYTES)
            result[spec.name] = (dims, math.prod(dims) * per_value)
    return result


def estimate_response_bytes(outputs: dict[str, tuple[list[int], int]], echoed_bytes: int) -> int:
    """The most bytes a response with ``outputs`` (from :func:`output_bytes`) takes in either encoding.

    ``echoed_bytes``: what it carries besides its outputs and the seed (model name, version, a request id).
    """
    return RESPONSE_OVERHEAD_BYTES + echoed_bytes + sum(TENSOR_OVERHEAD_BYTES + size for _, size in outputs.values())


def check_response_size(manifest: Manifest, checked: CheckedRequest, limit: int, echoed_bytes: int) -> None:
    """ResourceExhaustedError if the response to ``checked`` could pass ``limit`` bytes (see :func:`estimate_response_bytes`)."""
    outputs = output_bytes(manifest, checked)
    estimate = estimate_response_bytes(outputs, echoed_bytes)
    if estimate <= limit:
        return
    largest = max(outputs, key=lambda name: outputs[name][1])
    dims, size = outputs[largest]
    advice = "send fewer rows"
    if SAMPLES in outputs:
        advice += f", leave out the {SAMPLES!r} output, or ask for fewer mc_samples"
    raise ResourceExhaustedError(
        f"the response would take up to {estimate} bytes, over the server's limit of {limit} bytes "
        f"(--max-message-bytes), {size} of them for output {largest!r} of shape {dims}; {advice}"
    )
