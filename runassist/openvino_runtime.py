"""``--backend openvino``: the exported fp32 graph (``onnx/model.onnx``) run by OpenVINO's CPU plugin.

Why a second runtime for the same file: on a CPU with AMX or avx512_bf16, OpenVINO runs the fp32
graph in bf16 by itself (its ``INFERENCE_PRECISION_HINT`` defaults to bf16 there), and on the
NER demo that was well over 1.3x the texts/s of ONNX Runtime's int8 file as served (with its fp32
guard), with entities as close to torch fp32 (bench/README.md, "torch.compile and OpenVINO").
On a CPU without bf16 the hint is f32 and it runs about as fast as ONNX Runtime fp32: there
``--backend onnx`` (int8) is the faster choice.

The export checks it like every other file: ``runassist export`` runs the dev split through
OpenVINO too when ``openvino`` is installed (an optional extra: ``pip install runassist[openvino]``)
and records ``checks.openvino`` in ``onnx/parity.json``; this backend refuses a run whose export
has no passing check. No int8 guard: bf16 moves logits far less than int8 does, as with
``--precision bf16`` on the torch backend.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from runassist.atomic import read_json
from runassist.errors import RunassistError
from runassist.onnx_runtime import FP32, graph_feed

CHECK = "openvino"  # the key of its parity check in onnx/parity.json


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise RunassistError("--backend openvino needs the openvino package: pip install 'runassist[openvino]' "
                             "(then export again so the export checks it)") from None
    return ov


class OpenVinoModel:
    """An OpenVINO compiled model that answers like ``onnx_runtime.OnnxModel``: ``model(**batch)``
    has each graph output as a torch tensor; ``eval()`` is a no-op; it lives on the CPU."""

    device = torch.device("cpu")
    training = False

    def __init__(self, path: str | Path, *, threads: int | None = None, precision: str | None = None):
        ov = _require()
        self.path = Path(path)
        self.threads = max(1, threads or torch.get_num_threads())
        config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if precision is not None:  # None: the plugin's default (bf16 where the CPU has it, else f32)
            config["INFERENCE_PRECISION_HINT"] = precision
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.input_types = {i.get_any_name(): i.get_element_type().to_dtype() for i in self.compiled.inputs}
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self._local = threading.local()  # an infer request is not thread-safe: one per thread

    @classmethod
    def load(cls, run: str | Path, *, threads: int | None = None) -> OpenVinoModel:
        """The run's fp32 export, if its export checked it with OpenVINO and it passed."""
        _require()
        folder = Path(run) / "onnx"
        parity_path = folder / "parity.json"
        if not (folder / FP32).is_file() or not parity_path.is_file():
            raise RunassistError(f"{run}: no ONNX export; run `runassist export {run}` first")
        check = read_json(parity_path).get("checks", {}).get(CHECK)
        if check is None:
            raise RunassistError(f"{parity_path}: the export did not check OpenVINO (it was not installed then); "
                                 f"export again: runassist export {run}")
        if not check.get("passed"):
            raise RunassistError(f"{parity_path}: OpenVINO's predictions matched torch on "
                                 f"{check.get('agreement', 0):.1%} of {check.get('examples')} dev examples, below "
                                 f"the export's --min-agreement; use --backend onnx or torch")
        return cls(folder / FP32, threads=threads)

    def eval(self) -> OpenVinoModel:
        return self

    def train(self, mode: bool = True) -> OpenVinoModel:
        if mode:
            raise RunassistError("an OpenVINO model cannot be trained; use the torch backend")
        return self

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer(graph_feed(self.path, self.input_names, self.input_types, batch))
        # Copies: the request's output buffers are reused by its next call.
        return SimpleNamespace(**{name: torch.from_numpy(np.array(out[port]))
                                  for name, port in zip(self.output_names, self.compiled.outputs)})
