"""The first tensor of a V2 inference body, in JSON or in the binary tensor extension.

V2's binary extension (tritonclient's default) sends a JSON header of
``Inference-Header-Content-Length`` bytes, then each tensor's raw little-endian bytes in
order, sized by its ``parameters.binary_data_size``. The sidecar samples both encodings for
drift; anything it cannot read exactly (a size that does not match the shape, an unknown
datatype, ``BYTES``) is ``None``, never a guess. JSON is parsed with orjson, several times
faster than the standard library's parser on arrays of floats; like JSON itself it refuses
``NaN`` and ``Infinity``, so a body holding them is not sampled.

>>> import json, numpy as np
>>> header = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
...                                  "parameters": {"binary_data_size": 16}}]}).encode()
>>> body = header + np.arange(4, dtype=np.float32).tobytes()
>>> first_tensor(body, len(header), "inputs").tolist()
[[0.0, 1.0], [2.0, 3.0]]
>>> first_tensor(b'{"outputs": [{"shape": [1], "datatype": "FP32", "data": [5]}]}', None, "outputs").tolist()
[5.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

#: V2 datatypes with a fixed width, as little-endian numpy types.
DATATYPES = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip


def first_tensor(body: bytes | bytearray, header_length: int | None, part: str) -> np.ndarray | None:
    """The first tensor of ``part`` (``inputs`` or ``outputs``) as float32, or None if unreadable.

    ``header_length`` is the ``Inference-Header-Content-Length`` header's value (None for
    a plain JSON body).

    >>> body = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}'
    >>> first_tensor(body, None, "inputs")
    array([[1., 2.]], dtype=float32)
    >>> first_tensor(b"not json", None, "inputs") is None
    True
    """
    try:
        if header_length is None:
            return _tensor(orjson.loads(body)[part][0], memoryview(b""))
        if header_length < 0 or header_length > len(body):
            return None
        header = orjson.loads(memoryview(body)[:header_length])
        return _tensor(header[part][0], memoryview(body)[header_length:])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _tensor(first: dict[str, Any], payload: memoryview) -> np.ndarray | None:
    """A tensor's values: from its JSON ``data`` if it has one, else the first bytes of ``payload``."""
    shape = [int(d) for d in first["shape"]]
    if "data" in first:
        return np.asarray(first["data"], dtype=np.float32).reshape(shape)
    dtype = DATATYPES.get(first.get("datatype", ""))
    size = int((first.get("parameters") or {}).get("binary_data_size", -1))
    if dtype is None or size != int(np.prod(shape)) * np.dtype(dtype).itemsize or size > len(payload):
        return None
    return np.frombuffer(payload[:size], dtype=dtype).reshape(shape).astype(np.float32)
