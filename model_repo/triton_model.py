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


def _session_options(config):
    """The keys Triton's onnxruntime backend reads from ``parameters``, as the gateway does
    (gateway/runtime/session_options.py, which validates them when the gateway loads)."""
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(params.get("intra_op_thread_count") or 0)
    options.inter_op_num_threads = int(params.get("inter_op_thread_count") or 0)
    if params.get("execution_mode") == "1":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    for key, attribute in (("enable_mem_arena", "enable_cpu_mem_arena"), ("enable_mem_pattern", "enable_mem_pattern")):
        if key in params:
            setattr(options, attribute, params[key].strip().lower() in ("1", "true", "on", "yes"))
    level = config.get("optimization", {}).get("graph", {}).get("level", 0)
    options.graph_optimization_level = {
        -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, 1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL}.get(int(level), ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    # Unless the model says otherwise, idle threads sleep: spinning ones would steal the
    # cores the server's other instances (separate stub processes) need.
    entries = {"session.intra_op.allow_spinning": "0"}
    entries.update((k, v) for k, v in params.items() if k.startswith("session."))
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    options.log_severity_level = 3
    return options


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = _session_options(config)
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
