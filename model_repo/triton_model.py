"""Triton Python-backend model that runs a version's ``model.onnx`` on onnxruntime.

This file is never imported by tunegate: ``model_repo.triton.write_python_view`` copies it
as ``<view>/<model>/<version>/model.py`` for a tritonserver that has the Python backend but
no ONNX Runtime backend (the one in the ``nvidia-pytriton`` wheel). It behaves like
Triton's ``onnxruntime_onnx`` backend for what tunegate uses: the requests of one dynamic
batch are merged into one session run and split again, BYTES tensors are UTF-8 strings,
and only the requested outputs are returned.
"""

import json
import os
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _param(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_param(config, "intra_op_threads", "0"))
        # Spinning threads would steal the cores the server's other instances need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.batching = config.get("max_batch_size", 0) > 0
        self.inputs = [(t["name"], t["data_type"] == "TYPE_STRING") for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        feeds_per_request = []
        for request in requests:
            feeds = {}
            for name, is_text in self.inputs:
                array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                if is_text:  # onnxruntime takes string tensors as str, Triton hands bytes
                    array = np.vectorize(lambda x: x.decode() if isinstance(x, bytes) else x,
                                         otypes=[object])(array)
                feeds[name] = array
            feeds_per_request.append(feeds)

        if self.batching and len(requests) > 1:
            rows = [next(iter(f.values())).shape[0] for f in feeds_per_request]
            merged = {name: np.concatenate([f[name] for f in feeds_per_request]) for name, _ in self.inputs}
            results = self.session.run(self.outputs, merged)
            bounds = np.cumsum([0] + rows)
            per_request = [[r[bounds[i]:bounds[i + 1]] for r in results] for i in range(len(requests))]
        else:
            per_request = [self.session.run(self.outputs, f) for f in feeds_per_request]

        responses = []
        for request, results in zip(requests, per_request):
            wanted = set(request.requested_output_names()) or set(self.outputs)
            tensors = []
            for name, array in zip(self.outputs, results):
                if name not in wanted:
                    continue
                if array.dtype == object:
                    array = np.array([x.encode() if isinstance(x, str) else x for x in array.reshape(-1)],
                                     dtype=object).reshape(array.shape)
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(array)))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        self.session = None
