"""Runtimes: the factory (a model's kind to a Runtime), onnxruntime in this process
(session options, execution providers), and forwarding to Triton servers (endpoints)."""
