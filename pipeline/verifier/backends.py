"""The backends a conversion is compared across, in a small registry keyed by name.

Each backend turns an NHWC float32 batch into `Outputs` (probabilities, and pre-softmax logits where it
has them) — a model's several inputs and outputs packed, a row a sample (`data.feeds`). `keras` is not run
here — TensorFlow lives in its own process — but read from the reference file the onnx stage wrote
(`keras_outputs.KerasReference`). What several backends share (the ONNX graph, onnx2torch's GraphModule,
the hand-written model) is loaded once, by `Sources`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.common.errors import NotApplicable
from pipeline.common.stage_status import NOT_BUILT
from pipeline.data import checkset
from pipeline.data.feeds import Layout
from pipeline.keras_file.model import KerasModel
from pipeline.runtimes import aoti, ort, pt2


@dataclass
class Outputs:
    probs: np.ndarray  # (N, classes); a model's several outputs packed (`layout`)
    logits: np.ndarray | None = None  # (N, classes) pre-softmax, where the backend has it
    layout: Layout | None = None  # the outputs packed in `probs`, where the model has several


def _joined(parts: list[Outputs]) -> Outputs:
    """Consecutive batches' outputs as one."""
    logits = [p.logits for p in parts]
    return Outputs(np.concatenate([p.probs for p in parts]), None if any(item is None for item in logits) else np.concatenate(logits),
                   parts[0].layout)


def _numpy(value) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else value.cpu().numpy()


def _packed(result, names: tuple[str, ...] | None = None) -> Outputs:
    """A model's result — one array or tensor, or a tuple of several — as `Outputs` (several packed: `feeds`)."""
    if not isinstance(result, (tuple, list)):
        return Outputs(_numpy(result))
    if len(result) == 1:
        return Outputs(_numpy(result[0]))
    arrays = [_numpy(r) for r in result]
    layout = Layout.of(names or [f"output_{i}" for i in range(len(arrays))], [a.shape[1:] for a in arrays])
    return Outputs(layout.pack(arrays), None, layout)


@dataclass(frozen=True)
class Artifacts:
    """The files a verification is asked about; any may be None where it is not given."""

    model: Path | None = None  # the Keras .h5 / .keras
    onnx: Path | None = None
    pt2: Path | None = None
    pt2_opt: Path | None = None  # the optimized program
    onnx_f64: Path | None = None  # the float64 rebuild's conversion: the float64 proof
    native: Path | None = None  # the native model's source, `native/model.py` (its weights beside it)
    pt2_aoti: Path | None = None  # the optimized program compiled ahead of time (AOTInductor)
    # The model's own float32 conversion (the onnx stage's model.onnx) where `onnx` is another file (a
    # conversion with a planted fault, someone else's): layers are placed by value in it (`placement`).
    onnx_reference: Path | None = None
    # {field: why its stage built nothing for this model} (`common.stage_status`): its backends are then
    # reported not applicable with that reason, instead of left out without a word
    not_built: dict[str, str] = field(default_factory=dict)


class Sources:
    """The artifacts of one verification, each loaded at most once and shared by the backends and the
    layer-by-layer comparison."""

    def __init__(self, artifacts: Artifacts, keras: KerasModel | None = None, manual_model=None, inputs: Layout | None = None):
        """`keras` is the model `artifacts.model` names, read (needed by the `manual` backend and to name
        layers in errors); `manual_model` replaces the hand-written model built from it (the tests pass
        a broken one); `inputs`: the model's several inputs, where no ONNX file says them (`input_layout`)."""
        self.artifacts = artifacts
        self.keras = keras
        self._manual_model = manual_model
        self._inputs = inputs

    @cached_property
    def input_layout(self) -> Layout | None:
        """The model's inputs where it has several (the check sets are packed: `feeds`), from whichever of its
        ONNX files is given; None for one input (or where no ONNX file is given: the torch stage's checks of a
        single-input model's programs)."""
        from pipeline.converters import onnx_graph

        if self._inputs is not None:
            return self._inputs
        path = next((p for p in (self.artifacts.onnx, self.artifacts.onnx_reference, self.artifacts.onnx_f64) if p is not None), None)
        if path is None or len(onnx_graph.input_names(path)) < 2:  # one input is fed as it is, whatever its dimensions
            return None
        return onnx_graph.input_layout(path)

    @cached_property
    def onnx_proto(self):
        import onnx

        return onnx.load(str(self.artifacts.onnx))

    @cached_property
    def graph_module(self):
        """onnx2torch's GraphModule of the ONNX file, as converted (`converters.to_fx.convert_raw`)."""
        from pipeline.converters import to_fx

        return to_fx.convert_raw(self.artifacts.onnx, self.keras.layer_names if self.keras else ())

    @cached_property
    def reference_graph(self):
        """(GraphModule, ONNX graph) in which layers are placed by value (`placement`): the model's own
        conversion where another file is under test, else the file under test (the same objects)."""
        reference = self.artifacts.onnx_reference
        if reference is None or self.artifacts.onnx is None or Path(reference).resolve() == Path(self.artifacts.onnx).resolve():
            return self.graph_module, self.onnx_proto
        import onnx

        from pipeline.converters import to_fx

        return to_fx.convert_raw(reference, self.keras.layer_names if self.keras else ()), onnx.load(str(reference))

    @cached_property
    def graph_module_f64(self):
        """onnx2torch's GraphModule of the float64 rebuild's ONNX file, in float64."""
        from pipeline.converters import to_fx

        return to_fx.convert_raw(self.artifacts.onnx_f64, self.keras.layer_names if self.keras else ()).double()

    @cached_property
    def native(self):
        """The generated native model in eval mode with its weights, and its source module (`native.load`)."""
        from pipeline.common.paths import NativePaths
        from pipeline.native import load

        source = Path(self.artifacts.native)
        return load.load(source, NativePaths(source.parent).weights)

    @cached_property
    def manual(self):
        """The hand-written ResNet8 with the Keras file's weights (NotApplicable for other models)."""
        if self._manual_model is not None:
            return self._manual_model
        from pipeline.verifier import resnet8

        return resnet8.from_keras(self.keras)[0]


Predict = Callable[[np.ndarray], Outputs]
_REGISTRY: dict[str, tuple[str, Callable[[Sources], Predict]]] = {}


def register(name: str, needs: str):
    """Register a backend factory `factory(sources) -> predict` that needs artifact field `needs`."""

    def decorate(factory):
        _REGISTRY[name] = (needs, factory)
        return factory

    return decorate


def available(artifacts: Artifacts) -> list[str]:
    """Names of the registered backends whose artifact is given or was not built (`Artifacts.not_built`:
    `load` then says why), in registration order."""
    return [name for name, (needs, _) in _REGISTRY.items() if getattr(artifacts, needs) is not None or needs in artifacts.not_built]


def needs(name: str) -> str:
    """The `Artifacts` field backend `name` loads from."""
    return _REGISTRY[name][0]


def load(name: str, sources: Sources) -> Predict:
    """Backend `name`'s predict function over `sources` (NotApplicable where it does not apply, or where
    its artifact was not built: `NOT_BUILT` and why)."""
    needs, factory = _REGISTRY[name]
    if getattr(sources.artifacts, needs) is None and needs in sources.artifacts.not_built:
        raise NotApplicable(NOT_BUILT + sources.artifacts.not_built[needs])
    return factory(sources)


def run_sets(predict: Predict, sets: dict[str, np.ndarray], progress=None) -> dict[str, Outputs]:
    """Run every check set through `predict` at its own batch size (see `checkset.batch_size_of`)."""
    results = {}
    for name, inputs in sets.items():
        results[name] = _joined([predict(batch) for batch in checkset.batches(inputs, checkset.batch_size_of(name))])
        if progress is not None:
            progress.update(len(inputs))
    return results


# Torch has no oneDNN convolution in float64 on CPU: its fallback (slow_conv2d) unfolds the whole batch
# first (im2col) — measured 1.4 GB for one 3×3×64 convolution at 96 px and batch 32, so 11 GB at the check
# set's 256 (VGG16's first block; it was killed out of memory). A float64 backend therefore runs a batch in
# slices of FLOAT64_ROWS rows: the same values (float64 rounding does not depend on the batch), bounded memory.
FLOAT64_ROWS = 32


def _in_slices(predict: Predict, rows: int) -> Predict:
    """`predict`, run on at most `rows` rows at a time and the results joined."""

    def sliced(batch: np.ndarray) -> Outputs:
        return _joined([predict(part) for part in checkset.batches(batch, rows)])

    return sliced


def torch_predict(module, returns_logits: bool = False, device=None, float64: bool = False, inputs: Layout | None = None) -> Predict:
    """A torch module as a backend; `returns_logits`: it returns (logits, probabilities). On `device` if
    given; with `float64`, fed float64 (the float32 inputs, cast exactly) FLOAT64_ROWS rows at a time;
    `inputs`: the model's several inputs, packed in each batch (`feeds`), given to it as its arguments."""
    import torch

    def predict(batch: np.ndarray) -> Outputs:
        xs = _tensors(batch, inputs, float64)
        with torch.inference_mode():
            result = module(*(xs if device is None else [x.to(device) for x in xs]))
        if returns_logits:
            logits, probs = result
            return Outputs(probs.cpu().numpy(), logits.cpu().numpy())
        return _packed(result)

    return _in_slices(predict, FLOAT64_ROWS) if float64 else predict


def _tensors(batch: np.ndarray, layout: Layout | None, float64: bool) -> list:
    """A packed batch (`feeds`) as the model's input tensors, in its order: float32, or float64 cast exactly."""
    import torch

    arrays = layout.unpack(batch) if layout is not None else [batch]
    return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64 if float64 else np.float32)) for a in arrays]


@register("onnxruntime", needs="onnx")
def onnxruntime_backend(sources: Sources) -> Predict:
    """`model.onnx` under ONNX Runtime; the input of a final Softmax is added as a second output."""
    from pipeline.converters.onnx_graph import softmax_input

    proto = sources.onnx_proto
    logits = softmax_input(proto.graph)
    outputs = [output.name for output in proto.graph.output]
    session = ort.session(proto, [logits] if logits else [])
    names, layout = [i.name for i in session.get_inputs()], sources.input_layout

    def predict(batch: np.ndarray) -> Outputs:
        arrays = layout.unpack(batch) if layout is not None else [batch]
        results = session.run(outputs + ([logits] if logits else []), {name: np.ascontiguousarray(a) for name, a in zip(names, arrays, strict=True)})
        if len(outputs) > 1:
            return _packed(results[:len(outputs)], tuple(outputs))
        return Outputs(results[0], results[1] if len(results) > 1 else None)

    return predict


@register("fx", needs="onnx")
def fx_backend(sources: Sources) -> Predict:
    """onnx2torch's GraphModule, as converted, run in this process (with logits where it ends in a Softmax)."""
    return _graph_predict(sources.graph_module, sources.input_layout)


@register("torch", needs="pt2")
def torch_backend(sources: Sources) -> Predict:
    """`model.pt2` loaded with `torch.export.load` (no onnx2torch, no pickled code)."""
    return torch_predict(pt2.load_module(sources.artifacts.pt2), inputs=sources.input_layout)


@register("torch_opt", needs="pt2_opt")
def torch_opt_backend(sources: Sources) -> Predict:
    """`model_opt.pt2` (BatchNorm folded, native ops) loaded with `torch.export.load`."""
    return torch_predict(pt2.load_module(sources.artifacts.pt2_opt), inputs=sources.input_layout)


@register("aoti", needs="pt2_aoti")
def aoti_backend(sources: Sources) -> Predict:
    """`model_aoti.pt2`, the AOTInductor package, loaded with `aoti_load_package`."""
    return torch_predict(aoti.load(sources.artifacts.pt2_aoti), inputs=sources.input_layout)


def fx64(sources: Sources) -> Predict:
    """The float64 rebuild's GraphModule, run in float64 (with logits where it ends in a Softmax): the
    float64 proof's backend, compared with Keras float64 only — so not in the registry of pairs."""
    return _graph_predict(sources.graph_module_f64, sources.input_layout, float64=True)


def _graph_predict(gm, inputs: Layout | None, float64: bool = False) -> Predict:
    """A GraphModule as a backend (of several `inputs`, where given), returning its logits too where it ends in
    a Softmax (`fx_passes.with_logits`)."""
    from pipeline.converters import fx_passes

    with_logits = fx_passes.with_logits(gm)
    return torch_predict(with_logits if with_logits is not None else gm, with_logits is not None, float64=float64, inputs=inputs)


def _native_predict(sources: Sources, float64: bool) -> Predict:
    """The native model as a backend, with the logits its source names (`LOGITS`) where it ends in a softmax."""
    import copy

    import torch

    from pipeline.native import load

    model, module = sources.native
    model = copy.deepcopy(model).double() if float64 else model
    layout = sources.input_layout

    def predict(batch: np.ndarray) -> Outputs:
        xs = _tensors(batch, layout, float64)
        with torch.inference_mode():
            if isinstance(module.LOGITS, str):  # one output ending in a softmax (several outputs: a list, for training)
                probs, local = load.run_with_locals(model, *xs)
                logits = local[module.LOGITS]  # channels-first inside the model: a softmax over every step's classes is (N, C, steps)
                return Outputs(probs.numpy(), (logits.movedim(1, -1) if logits.dim() >= 3 else logits).numpy())
            return _packed(model(*xs))

    return _in_slices(predict, FLOAT64_ROWS) if float64 else predict


@register("native", needs="native")
def native_backend(sources: Sources) -> Predict:
    """The native model generated from the Keras file alone (`native/model.py` + `model.safetensors`)."""
    return _native_predict(sources, float64=False)


def native64(sources: Sources) -> Predict:
    """The native model in float64 (`.double()`): the float64 proof's second, independent path."""
    return _native_predict(sources, float64=True)


@register("manual", needs="model")
def manual_backend(sources: Sources) -> Predict:
    """The hand-written ResNet8 with weights read by h5py (NotApplicable for other models)."""
    import torch

    model = sources.manual

    def forward(x):
        logits = model.logits(x)
        return logits, torch.softmax(logits, dim=-1)

    return torch_predict(forward, returns_logits=True)
