"""The sidecar's V2 tensor decoding: JSON and the binary extension, and nothing it cannot read exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pruneops.serving.v2tensors import first_tensor

pytestmark = pytest.mark.unit


def binary(tensors: list[dict], *payloads: bytes) -> tuple[bytes, int]:
    header = json.dumps({"inputs": tensors}).encode()
    return header + b"".join(payloads), len(header)


@pytest.mark.parametrize("dtype", ["FP32", "FP64", "INT64", "INT32", "UINT8", "FP16"])
def test_binary_tensors_of_each_width_decode(dtype: str) -> None:
    values = np.arange(6).reshape(2, 3).astype({"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4",
                                                "UINT8": "<u1", "FP16": "<f2"}[dtype])  # fmt: skip
    body, length = binary([{"name": "x", "shape": [2, 3], "datatype": dtype,
                            "parameters": {"binary_data_size": values.nbytes}}], values.tobytes())  # fmt: skip
    decoded = first_tensor(body, length, "inputs")
    assert decoded is not None and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, values.astype(np.float32))


def test_the_first_tensor_is_read_when_several_follow() -> None:
    first, second = np.ones((1, 2), "<f4"), np.zeros((1, 4), "<f4")
    body, length = binary([{"name": "a", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                           {"name": "b", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
                          first.tobytes(), second.tobytes())  # fmt: skip
    np.testing.assert_array_equal(first_tensor(body, length, "inputs"), first)


@pytest.mark.parametrize(
    ("tensor", "payload", "length_change"),
    [
        ({"shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 12}}, b"\0" * 12, 0),  # size lies
        ({"shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}}, b"\0" * 8, 0),  # truncated
        ({"shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}, b"\0" * 8, 0),  # not numeric
        ({"shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4, 10**9),  # header length
        ({"shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4, -3),  # cuts the JSON
    ],
)
def test_what_cannot_be_read_exactly_is_not_sampled(tensor: dict, payload: bytes, length_change: int) -> None:
    body, length = binary([{"name": "x", **tensor}], payload)
    assert first_tensor(body, length + length_change, "inputs") is None


def test_json_and_non_v2_bodies() -> None:
    assert first_tensor(b'{"inputs": [{"shape": [1, 2], "data": [1, 2]}]}', None, "inputs").tolist() == [[1.0, 2.0]]
    assert first_tensor(b"not json", None, "inputs") is None
    assert first_tensor(b'{"inputs": []}', None, "inputs") is None


def test_json_data_decodes_as_the_standard_parser_does() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 5)).tolist()
    for data in (values, [x for row in values for x in row]):  # nested and flattened, both V2
        body = json.dumps({"inputs": [{"name": "x", "shape": [3, 5], "datatype": "FP32", "data": data}]}).encode()
        np.testing.assert_array_equal(first_tensor(bytearray(body), None, "inputs"),
                                      np.asarray(values, dtype=np.float32))  # fmt: skip


def test_nan_and_infinity_are_not_json_so_not_sampled() -> None:
    assert first_tensor(b'{"inputs": [{"shape": [2], "data": [NaN, 1]}]}', None, "inputs") is None
    assert first_tensor(b'{"inputs": [{"shape": [1], "data": [Infinity]}]}', None, "inputs") is None
