"""The peer model server: a plain ``kserve.Model`` running ONNX Runtime, served by KServe's own ModelServer.

What a team would write instead of ``pruneops serve``, following KServe's custom-model
guide: a ``Model`` subclass whose synchronous ``predict`` decodes the V2 input, runs the ONNX
session and answers. It gets pruneops's ONNX Runtime options (no intra-op spinning, the
same thread count) and no access log, so the comparison is of the servers, not their
settings. No registry, no alias following, no limits, no metrics headers.

Run: ``python benchmarks/kserve_peer.py MODEL.onnx PORT`` (the model is served as ``digits``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferResponse, Model, ModelServer

from pruneops.serving.loader import _session_options


class OnnxModel(Model):
    """One ONNX file, one input, one output; the V2 request's first tensor is the input."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.session = ort.InferenceSession(path, sess_options=_session_options(), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True

    def predict(self, payload: Any, headers: Any = None) -> InferResponse:
        batch = np.ascontiguousarray(payload.inputs[0].as_numpy(), dtype=np.float32)
        (result,) = self.session.run([self.output_name], {self.input_name: batch})
        output = InferOutput(name=self.output_name, shape=list(result.shape), datatype="FP32")
        output.set_data_from_numpy(result, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or "")


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    logging.getLogger("uvicorn.access").disabled = True
    model = OnnxModel("digits", path)
    ModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()
