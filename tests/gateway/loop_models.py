"""Tiny classifiers for the loop's tests: P = X[:, :3] @ PERM (+ a fault), so the class a
version answers is known exactly."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from model_repo import Repository, TensorSpec, make_config

from .models import _save


def classifier(perm=(0, 1, 2), *, fail_on_nonzero: bool = False) -> bytes:
    """Scores are the first three inputs, permuted. ``fail_on_nonzero``: adds a Gather whose
    index is max(X): zeros (the warm-up) pass, real inputs fail in onnxruntime at run time,
    so the version loads and then answers errors."""
    w = np.zeros((4, 3), np.float32)
    for j, i in enumerate(perm):
        w[i, j] = 1.0
    inits = [numpy_helper.from_array(w, "W")]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["P" if not fail_on_nonzero else "XW"])]
    if fail_on_nonzero:
        inits.append(numpy_helper.from_array(np.zeros((1, 3), np.float32), "T"))
        nodes += [helper.make_node("ReduceMax", ["X"], ["M"], axes=[1], keepdims=0),
                  helper.make_node("Cast", ["M"], ["I"], to=TensorProto.INT64),
                  helper.make_node("Gather", ["T", "I"], ["G"], axis=0),
                  helper.make_node("Add", ["XW", "G"], ["P"])]
    graph = helper.make_graph(nodes, "clf", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("P", TensorProto.FLOAT, ["N", 3])], inits)
    return _save(graph)


def classifier_config(name: str):
    return make_config(name, [TensorSpec("X", "FP32", (4,))], [TensorSpec("P", "FP32", (3,))], max_batch_size=8)


def publish(repo: Repository, name: str, model_bytes: bytes, *, fine_tuned: bool = False) -> int:
    """``fine_tuned``: the manifest says a fine-tune job made it (what makes a canary)."""
    fields = {"training": {"world_size": 2, "mode": "allreduce"}} if fine_tuned else {}
    with repo.staging(name) as staged:
        (staged / "model.onnx").write_bytes(model_bytes)
        version = repo.list_versions(name)[-1] if repo.has_model(name) and repo.list_versions(name) else None
        return repo.publish(name, staged, config=classifier_config(name), parent_version=version, **fields).version
