"""ONNX export of the classifier, and the ONNX Runtime scorer behind ``load_detector(..., backend="onnx")``.

The exported graph takes preprocessed crops (N, 3, S, S) float32 (RGB, scaled to [0, 1], normalised by the
weights' mean / std) and returns the uncalibrated "fake" logit (N,). The weights' metadata (``ModelMeta``:
input size, mean / std, crop, temperature, threshold, labels, provenance) is stored in the ONNX file's
metadata under the same keys as in the safetensors file, so the ONNX file alone rebuilds preprocessing,
calibration and labels, here or in a phone runtime. Grad-CAM needs gradients, so it stays with PyTorch.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .media import atomic_path
from .model import DeepfakeCNN
from .weights import ModelMeta

BACKENDS = ("torch", "onnx")
BACKEND_ENV = "DEEPSHIELD_BACKEND"
OPSET = 17
INPUT, OUTPUT = "crops", "logit"
NO_ORT = "the onnx backend needs ONNX Runtime: pip install onnxruntime (the torch backend needs nothing more)"


def resolve_backend(requested: str | None = None) -> str:
    """``requested``, else ``$DEEPSHIELD_BACKEND``, else "torch". Raises: ValueError for an unknown name."""
    backend = requested or os.environ.get(BACKEND_ENV) or "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    return backend


def onnx_bytes(model: DeepfakeCNN, meta: ModelMeta) -> bytes:
    """The model as an ONNX graph (dynamic batch) carrying ``meta``. Args: a model on any device.
    Raises: ValueError when the ``onnx`` package (the exporter's) is missing."""
    try:
        import onnx
    except ImportError as err:
        raise ValueError("ONNX export needs the onnx package: pip install onnx onnxruntime") from err
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device and layout
    example = torch.zeros(2, 3, meta.img_size, meta.img_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # TF "SAME" padding is computed from the input size in Python: the tracer warns that it becomes a
        # constant, which it should (the input size is fixed by the weights).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The TorchScript exporter is deprecated in favour of torch.export's, which needs one more package
        # (onnxscript) and gives the same graph here; revisit when torch drops it.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, dynamo=False)
    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in meta.to_metadata().items():
        graph.metadata_props.add(key=key, value=value)
    graph.doc_string = ("DeepShield face deepfake classifier: input 'crops' (N, 3, S, S) float32 RGB in [0, 1] "
                        "normalised by metadata mean / std; output 'logit' (N,), P(fake) = sigmoid(logit / temperature)")
    return graph.SerializeToString()


def export_onnx(model: DeepfakeCNN, meta: ModelMeta, out: str | os.PathLike) -> Path:
    """Write ``onnx_bytes`` to ``out`` atomically. Returns: the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = onnx_bytes(model, meta)
    with atomic_path(out) as partial:
        partial.write_bytes(data)
    return out


def require_onnxruntime() -> None:
    """Raises: ValueError with the install line when ONNX Runtime is missing."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise ValueError(NO_ORT)


class OnnxScorer:
    """An ONNX Runtime session over an exported classifier: preprocessed crops in, logits out; ``meta`` is
    the ``ModelMeta`` the file carries."""

    def __init__(self, source: str | os.PathLike | bytes, threads: int = 0) -> None:
        require_onnxruntime()
        import onnxruntime

        name = "ONNX model" if isinstance(source, bytes) else str(source)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # the same cores torch would use
        # No busy-waiting between runs: spinning threads took the cores from face detection and decoding, and
        # made the whole image path slower than torch's though the forward pass was twice as fast.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(source if isinstance(source, bytes) else str(source), options,
                                                        providers=["CPUExecutionProvider"])
        except (onnxruntime.capi.onnxruntime_pybind11_state.Fail,
                onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf) as err:
            raise ValueError(f"{name}: not a loadable ONNX model ({err})") from err
        self.meta = ModelMeta.from_metadata(self.session.get_modelmeta().custom_metadata_map, name)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Args: (N, 3, S, S) float32. Returns: logits (N,) float32."""
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(batch, dtype=np.float32)})[0]
