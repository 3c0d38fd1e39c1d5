"""The backends a conversion is compared across, in a small registry keyed by name.

Each backend turns an NHWC float32 batch into `Outputs` (probabilities, and pre-softmax logits where it
has them). `keras` is not run here — TensorFlow lives in its own process — but read from the reference
file the onnx stage wrote (`KerasReference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import checkset
from pipeline.errors import BadInput


@dataclass
class Outputs:
    probs: np.ndarray  # (N, classes)
    logits: np.ndarray | None = None  # (N, classes) pre-softmax, where the backend has it


@dataclass(frozen=True)
class Artifacts:
    """The files a verification is asked about; any may be None where it is not given."""

    model: Path | None = None  # the Keras .h5
    onnx: Path | None = None
    pt2: Path | None = None
    pt2_opt: Path | None = None  # the optimized program


Predict = Callable[[np.ndarray], Outputs]
_REGISTRY: dict[str, tuple[str, Callable[[Artifacts], Predict]]] = {}


def register(name: str, needs: str):
    """Register a backend factory `factory(artifacts) -> predict` that needs artifact field `needs`."""

    def decorate(factory):
        _REGISTRY[name] = (needs, factory)
        return factory

    return decorate


def available(artifacts: Artifacts) -> list[str]:
    """Names of the registered backends whose artifact is given, in registration order."""
    return [name for name, (needs, _) in _REGISTRY.items() if getattr(artifacts, needs) is not None]


def load(name: str, artifacts: Artifacts) -> Predict:
    return _REGISTRY[name][1](artifacts)


def run_sets(predict: Predict, sets: dict[str, np.ndarray], progress=None) -> dict[str, Outputs]:
    """Run every check set through `predict` at its own batch size (see `checkset.batch_size_of`)."""
    results = {}
    for name, inputs in sets.items():
        parts = [predict(batch) for batch in checkset.batches(inputs, checkset.batch_size_of(name))]
        if progress is not None:
            progress.update(len(inputs))
        logits = [p.logits for p in parts]
        results[name] = Outputs(
            np.concatenate([p.probs for p in parts]),
            None if any(item is None for item in logits) else np.concatenate(logits),
        )
    return results


def _torch_predict(module, returns_logits: bool) -> Predict:
    import torch

    def predict(batch: np.ndarray) -> Outputs:
        with torch.inference_mode():
            result = module(torch.from_numpy(np.ascontiguousarray(batch)))
        if returns_logits:
            logits, probs = result
            return Outputs(probs.numpy(), logits.numpy())
        return Outputs(result.numpy())

    return predict


def onnxruntime_session(proto, extra_outputs: list[str] = ()):
    """An ONNX Runtime CPU session of `proto` that also returns the tensors named in `extra_outputs`.

    `proto` is not changed: the outputs are added to a copy.
    """
    import onnx
    import onnxruntime as ort

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    existing = {o.name for o in proto.graph.output}
    for name in extra_outputs:
        if name not in existing:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@register("onnxruntime", needs="onnx")
def onnxruntime_backend(artifacts: Artifacts) -> Predict:
    """`model.onnx` under ONNX Runtime; the input of a final Softmax is added as a second output."""
    import onnx

    proto = onnx.load(str(artifacts.onnx))
    output = proto.graph.output[0].name
    producer = next((n for n in proto.graph.node if output in n.output), None)
    fetch = [output]
    if producer is not None and producer.op_type == "Softmax":
        fetch.append(producer.input[0])
    session = onnxruntime_session(proto, fetch[1:])
    input_name = session.get_inputs()[0].name

    def predict(batch: np.ndarray) -> Outputs:
        results = session.run(fetch, {input_name: batch})
        return Outputs(results[0], results[1] if len(results) > 1 else None)

    return predict


@register("fx", needs="onnx")
def fx_backend(artifacts: Artifacts) -> Predict:
    """onnx2torch's GraphModule, as converted, run in this process (with logits where it ends in a Softmax)."""
    import onnx2torch

    from pipeline import fx_passes

    gm = onnx2torch.convert(str(artifacts.onnx)).eval()
    with_logits = fx_passes.with_logits(gm)
    return _torch_predict(with_logits if with_logits is not None else gm, with_logits is not None)


@register("torch", needs="pt2")
def torch_backend(artifacts: Artifacts) -> Predict:
    """`model.pt2` loaded with `torch.export.load` (no onnx2torch, no pickled code)."""
    from pipeline.torch_export import load_pt2

    return _torch_predict(load_pt2(artifacts.pt2), returns_logits=False)


@register("torch_opt", needs="pt2_opt")
def torch_opt_backend(artifacts: Artifacts) -> Predict:
    """`model_opt.pt2` (BatchNorm folded, native ops) loaded with `torch.export.load`."""
    from pipeline.torch_export import load_pt2

    return _torch_predict(load_pt2(artifacts.pt2_opt), returns_logits=False)


@register("manual", needs="model")
def manual_backend(artifacts: Artifacts) -> Predict:
    """The hand-written ResNet8 with weights read by h5py (NotApplicable for other models)."""
    import torch

    from pipeline import resnet8

    model, _ = resnet8.from_h5(artifacts.model)

    def forward(x):
        logits = model.logits(x)
        return logits, torch.softmax(logits, dim=-1)

    return _torch_predict(forward, returns_logits=True)


class KerasReference:
    """Keras's outputs on the check set, as the onnx stage wrote them (`keras_reference.npz`)."""

    def __init__(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                self._arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as exc:
            raise BadInput(f"{path} is not a readable Keras reference file ({exc}); rerun the onnx stage") from exc
        self.path = path

    @property
    def model_sha256(self) -> str:
        return str(self._arrays.get("model_sha256", ""))

    @property
    def data_sha256(self) -> str:
        return str(self._arrays.get("data_sha256", ""))

    def set_names(self) -> list[str]:
        return sorted({key.split("/")[0] for key in self._arrays if key.endswith("/probs")})

    def inputs(self, name: str) -> np.ndarray | None:
        return self._arrays.get(f"{name}/inputs")

    def outputs(self) -> dict[str, Outputs]:
        return {name: Outputs(self._arrays[f"{name}/probs"], self._arrays.get(f"{name}/logits")) for name in self.set_names()}
