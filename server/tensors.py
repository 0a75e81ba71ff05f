"""numpy ⇄ raw little-endian bytes and ``dropnet.v1.Tensor``: numpy and the generated protos only.

Shared by the server's codecs (:mod:`dropnet.server.codecs`) and the client (:mod:`dropnet.server.client`), so
a client install needs neither onnxruntime nor the data plane. Every bad encoding raises
:class:`InvalidInputError` saying what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dropnet.core.errors import InvalidInputError
from dropnet.protos.dropnet.v1 import predictor_pb2 as v1

MAX_RANK = 32
"""Most dimensions a tensor may have (numpy's own limit is 64; no model input needs more than a few)."""
MAX_ELEMENTS = 2**31
"""Most elements a tensor's shape may describe, its zero dimensions left out of the product. A protobuf
message holds at most 2 GiB, so no tensor on the wire has more, and numpy can build any shape within it
(an empty one included: numpy refuses [0, 2**40, 2**40] as too big)."""


def little_endian(dtype: Any) -> np.dtype:
    """``dtype`` with little-endian byte order (unchanged for one-byte types)."""
    return np.dtype(dtype).newbyteorder("<")


def check_shape(what: str, shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple, checked before any array is built.

    InvalidInputError if it has over :data:`MAX_RANK` dimensions, a negative one, or non-zero
    dimensions whose product passes :data:`MAX_ELEMENTS` (whatever the zeros beside them).
    """
    if len(shape) > MAX_RANK:
        raise InvalidInputError(f"{what} has {len(shape)} dimensions; expected at most {MAX_RANK}")
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidInputError(f"{what} has shape {list(dims)}; expected dimensions >= 0")
    if math.prod(d for d in dims if d) > MAX_ELEMENTS:
        raise InvalidInputError(
            f"{what} has shape {list(dims)}, whose non-zero dimensions multiply to over {MAX_ELEMENTS}; "
            f"expected at most {MAX_ELEMENTS} elements"
        )
    return dims


def decode_raw(what: str, data: bytes, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    """Little-endian C-order ``data`` as an array of ``dtype`` and ``shape``, checking the byte length."""
    dims = check_shape(what, shape)
    expected = math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise InvalidInputError(
            f"{what} has {len(data)} bytes of data; expected {expected} "
            f"({math.prod(dims)} elements of shape {list(dims)} × {dtype.itemsize} bytes)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def little_endian_bytes(array: np.ndarray) -> bytes:
    """``array``'s elements as little-endian C-order bytes."""
    return np.ascontiguousarray(array, dtype=little_endian(array.dtype)).tobytes()


V1_DTYPES: dict[int, np.dtype] = {
    v1.DATA_TYPE_FLOAT32: little_endian(np.float32),
    v1.DATA_TYPE_FLOAT64: little_endian(np.float64),
    v1.DATA_TYPE_FLOAT16: little_endian(np.float16),
    v1.DATA_TYPE_UINT8: little_endian(np.uint8),
    v1.DATA_TYPE_INT32: little_endian(np.int32),
    v1.DATA_TYPE_INT64: little_endian(np.int64),
}
"""dropnet.v1 DataType → numpy dtype."""
_V1_BY_NUMPY = {dtype: enum for enum, dtype in V1_DTYPES.items()}


def v1_dtype(dtype: Any) -> int:
    """The dropnet.v1 DataType of a numpy dtype, or InvalidInputError naming the supported ones."""
    enum = _V1_BY_NUMPY.get(little_endian(dtype))
    if enum is None:
        supported = [str(np.dtype(d)) for d in V1_DTYPES.values()]
        raise InvalidInputError(f"dtype {np.dtype(dtype)} has no dropnet.v1 DataType; expected one of {supported}")
    return enum


def decode_tensor(tensor: v1.Tensor, what: str) -> np.ndarray:
    """A v1 Tensor as a numpy array."""
    dtype = V1_DTYPES.get(tensor.dtype)
    if dtype is None:
        known = [v1.DataType.Name(enum) for enum in V1_DTYPES]
        raise InvalidInputError(f"{what} has dtype {_v1_dtype_name(tensor.dtype)}; expected one of {known}")
    return decode_raw(what, tensor.data, dtype, tensor.shape)


def encode_tensor(array: np.ndarray) -> v1.Tensor:
    """A numpy array as a v1 Tensor; InvalidInputError for a dtype v1 has no DataType for (bool, int8, complex, ...)."""
    return v1.Tensor(shape=array.shape, dtype=v1_dtype(array.dtype), data=little_endian_bytes(array))


def _v1_dtype_name(value: int) -> str:
    return v1.DataType.Name(value) if value in v1.DataType.values() else str(value)
