"""Building candidates: the built-in trainer, compute backends (local process, Kubernetes Job), the model-format port (built-in, ONNX), validation, the verified model loader, SHAP.
May import data, registry, integrity, observability, contracts, stats and the shared modules.
"""
