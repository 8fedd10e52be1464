"""tunegate gateway: the repository served over KServe v2 / Triton HTTP on onnxruntime."""

__version__ = "0.1.0"

__all__ = ["__version__"]
