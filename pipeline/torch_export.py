"""Stage 2: `model.onnx` → onnx2torch `GraphModule` → portable `model.pt2` (torch.export) + `model_fx.py`,
and the optimized `model_opt.pt2` + `model_opt_fx.py` (`fx_optimize`: BatchNorm folded into the convs,
onnx2torch's wrappers replaced by torch functions, MatMul+Add as Linear).

`model.pt2` holds no pickled code: `torch.export.load` rebuilds it without onnx2torch in the process.
onnx2torch's Reshape blocks `torch.export`; `fx_passes.static_reshapes` fixes that first. The saved
program is then loaded back and checked against ONNX Runtime before the stage returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from pipeline import backends, checkset
from pipeline.atomic import atomic_path, write_text
from pipeline.compare import PairResult, compare
from pipeline.errors import BadInput, CheckFailed
from pipeline.fx_optimize import OptimizeReport
from pipeline.paths import ModelPaths

# Largest batch the exported program accepts; torch.export needs a bound for its symbolic batch.
MAX_BATCH = 1 << 16


@dataclass
class TorchResult:
    pt2: Path
    fx_code: Path
    reshapes_made_static: int
    validation: PairResult  # model.pt2 against onnxruntime
    pt2_opt: Path
    optimizations: OptimizeReport
    validation_opt: PairResult  # model_opt.pt2 against onnxruntime


def input_shape(onnx_path: Path) -> tuple[int, ...]:
    """One sample's input shape from the ONNX graph (the batch dimension is dropped)."""
    import onnx

    dims = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:])
    if not shape or any(d <= 0 for d in shape):
        raise BadInput(f"{onnx_path}: input shape {shape} is not fully known; convert with a fixed input shape")
    return shape


def unconvertible_node(onnx_path: Path, layer_names: list[str] = ()) -> str:
    """Which node onnx2torch cannot convert, with the Keras layer it came from ("op X of layer Y (ONNX
    node Z)"): a diagnosis made only after `onnx2torch.convert` failed, whose error names no node. Each
    node is given to its converter as `convert` does, after the same shape inference."""
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.utils.safe_shape_inference import safe_shape_inference

    from pipeline.onnx_fixes import layer_owners

    proto = safe_shape_inference(str(onnx_path))
    opsets = {opset.domain: opset.version for opset in proto.opset_import}
    graph = OnnxGraph(proto.graph)
    owners = layer_owners([node.name for node in proto.graph.node], list(layer_names))
    for name, node in graph.nodes.items():
        try:
            get_converter(domain=node.domain, operation_type=node.operation_type, version=opsets[node.domain])(node, graph)
        except Exception:  # noqa: BLE001 — this is the search for the failing node
            layer = owners.get(name)
            return f"op {node.operation_type} of " + (f"layer {layer} (ONNX node {name})" if layer else f"ONNX node {name}")
    return "a node of the graph"


def convert(onnx_path: Path, layer_names: list[str] = ()):
    """onnx2torch's GraphModule with static reshapes and slices, in eval mode, and the number of reshapes made static.

    Raises:
        BadInput: onnx2torch cannot convert a node; the message names the op and the Keras layer.
    """
    import onnx2torch

    from pipeline.fx_passes import static_reshapes, static_slices

    try:
        gm = onnx2torch.convert(str(onnx_path)).eval()
    except (NotImplementedError, KeyError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:200].rstrip(".")
        raise BadInput(f"onnx2torch cannot convert {unconvertible_node(onnx_path, layer_names)}: {reason}; "
                       "rebuild that layer from supported options or report it upstream") from exc
    reshapes = static_reshapes(gm, input_shape(onnx_path))
    static_slices(gm)
    return gm, reshapes


def export(gm, sample_shape: tuple[int, ...]):
    """`torch.export` with a dynamic batch dimension."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = torch.zeros((2, *sample_shape), dtype=torch.float32)
    with torch.no_grad():
        return torch.export.export(gm, (example,), dynamic_shapes=({0: batch},))


def load_program(path: Path):
    """Load a `.pt2` as an ExportedProgram; runs no pickled code and needs no onnx2torch."""
    import torch

    try:
        return torch.export.load(str(path))
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        raise BadInput(f"{path} is not a loadable torch.export program ({exc}); rerun `make torch`") from exc


def load_pt2(path: Path):
    """Load a `.pt2` as a callable module (see `load_program`)."""
    return load_program(path).module()


def run(onnx_path: Path, out_dir: Path, layer_names: list[str] = ()) -> TorchResult:
    """Convert `onnx_path`; write `model.pt2`, `model_fx.py`, `model_opt.pt2`, `model_opt_fx.py` into `out_dir`.

    `layer_names` (the Keras model's, if known) let an unconvertible op be named by its layer.

    Raises:
        BadInput: the ONNX file is missing or cannot be converted.
        CheckFailed: a reloaded `.pt2` disagrees with ONNX Runtime beyond the output tolerance.
    """
    import torch

    from pipeline import fx_optimize

    if not Path(onnx_path).is_file():
        raise BadInput(f"{onnx_path} does not exist; run `make onnx` first")
    paths = ModelPaths(Path(out_dir))
    gm, n_static = convert(onnx_path, layer_names)
    shape = input_shape(onnx_path)
    program = export(gm, shape)
    with atomic_path(paths.pt2) as tmp:
        torch.export.save(program, str(tmp))
    write_text(paths.fx_code, _fx_source(gm, onnx_path))
    validation = validate(paths.pt2, onnx_path, shape)
    optimized, report = fx_optimize.optimize(gm, shape)
    with atomic_path(paths.pt2_opt) as tmp:
        torch.export.save(export(optimized, shape), str(tmp))
    write_text(paths.fx_opt_code, _fx_source(optimized, onnx_path, "after fx_optimize"))
    validation_opt = validate(paths.pt2_opt, onnx_path, shape)
    return TorchResult(paths.pt2, paths.fx_code, n_static, validation, paths.pt2_opt, report, validation_opt)


def validate(pt2: Path, onnx_path: Path, sample_shape: tuple[int, ...]) -> PairResult:
    """A reloaded `.pt2` against ONNX Runtime on the random check batches; CheckFailed on a breach."""
    sets = checkset.random_batches(sample_shape)
    artifacts = backends.Artifacts(onnx=onnx_path, pt2=pt2)
    ort = backends.load("onnxruntime", artifacts)
    result = compare("torch", backends.run_sets(backends.load("torch", artifacts), sets),
                     "onnxruntime", backends.run_sets(ort, sets), classifier=ends_in_softmax(onnx_path))
    if not result.passed:
        raise CheckFailed(f"{pt2} disagrees with {onnx_path}: max |Δ| {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g})")
    return result


def ends_in_softmax(onnx_path: Path) -> bool:
    """Whether the ONNX graph's output comes from a Softmax: its outputs are class probabilities."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = next((n for n in graph.node if graph.output[0].name in n.output), None)
    return producer is not None and producer.op_type == "Softmax"


def _fx_source(gm, onnx_path: Path, after: str = "after static reshapes") -> str:
    header = (
        f'"""The forward() of the GraphModule onnx2torch made from {Path(onnx_path).name}, {after}.\n\n'
        "For reading only: the submodules it calls (convolutions, onnx2torch operations) live in model.pt2.\n"
        '"""\n\nimport torch\n\n\n'
    )
    return header + f"def forward{gm.code.split('def forward', 1)[1]}"
