"""The layer-by-layer checker on the real ResNet8: all ✓ on the good conversion, and each fault kind
placed at a known layer must be found there first. Kept fast: a slice of the layer check set."""

import pytest
import torch

import faults
from pipeline.keras_file.model import KerasModel
from pipeline.verifier import layer_compare, placement, resnet8
from pipeline.verifier.backends import Artifacts, Sources
from pipeline.verifier.keras_reference import KerasLayers
from pipeline.common.tolerances import LAYER_RTOL

IMAGES = 24  # of the layer check set: enough for every fault below to show, small enough to be quick


@pytest.fixture(scope="module")
def real_layers(real_run):
    _, paths, data = real_run
    stored = KerasLayers(paths.keras_layers)
    outputs = {name: value[:IMAGES] for name, value in stored.outputs.items()}
    return KerasModel.open(data / "models" / "pretrainedResnet.h5"), paths.onnx, outputs, stored.inputs[:IMAGES]


def _compare(keras, onnx_path, outputs, inputs, manual_model=None, with_manual=True, reference=None):
    """`reference`: the model's own conversion, where `onnx_path` is a broken copy of it (layers are placed in it)."""
    sources = Sources(Artifacts(keras.path, onnx_path, onnx_reference=reference), keras, manual_model)
    return layer_compare.run(keras, sources, outputs, inputs, with_manual=with_manual)


@pytest.mark.real_data
def test_good_conversion_every_layer_within_tolerance(real_layers):
    model, onnx_path, outputs, inputs = real_layers
    report = _compare(model, onnx_path, outputs, inputs)
    assert report.passed and report.first_divergence is None
    assert report.backends == ["onnxruntime", "fx", "manual"]
    compared = [row for row in report.rows if row.diffs]
    assert len(compared) == 29  # every ResNet8 layer has a comparison point of its own
    for row in compared:
        for diff in row.diffs:
            assert diff.max_abs_diff <= LAYER_RTOL * diff.scale, (row.keras_layer, diff)


CASES = [
    ("conv_weight", "conv2d"), ("conv_weight", "conv2d_3"), ("conv_weight", "conv2d_5"), ("conv_weight", "conv2d_7"),
    ("conv_weight", "dense"), ("bn_scale", "batch_normalization_1"), ("bn_scale", "batch_normalization_6"),
    ("symmetric_padding", "conv2d_3"), ("symmetric_padding", "conv2d_6"), ("relu_dropped", "conv2d_3"),
    ("kernel_permuted", "conv2d_4"),
]
# relu_dropped is placed after conv2d_3 → batch_normalization_3: the ReLU that goes missing is activation_3.
EXPECTED = {("relu_dropped", "conv2d_3"): "activation_3"}


@pytest.mark.real_data
@pytest.mark.parametrize("kind, layer", CASES)
def test_fault_found_at_its_layer(real_layers, tmp_path, kind, layer):
    model, onnx_path, outputs, inputs = real_layers
    broken = faults.broken_onnx(kind, onnx_path, tmp_path / "broken.onnx", model.path, layer)
    report = _compare(model, broken, outputs, inputs, with_manual=False, reference=onnx_path)
    divergence = report.first_divergence
    assert divergence is not None, f"{kind} at {layer} went unnoticed"
    assert divergence["keras_layer"] == EXPECTED.get((kind, layer), layer)
    assert divergence["backend"] == "onnxruntime" and divergence["max_abs_diff"] > divergence["tolerance"]
    assert {d.backend for row in report.rows for d in row.diffs if not d.passed} == {"onnxruntime", "fx"}


@pytest.mark.real_data
@pytest.mark.parametrize("module, layer", [("stack1.a.bn", "batch_normalization_1"), ("stack2.b.bn", "batch_normalization_4")])
def test_wrong_bn_epsilon_in_hand_written_model(real_layers, module, layer):
    # One BatchNorm with PyTorch's default epsilon instead of Keras's 1e-3. (In the stem BN the same
    # change stays below float32 noise — its variances are large — so it is placed where it shows.)
    model, onnx_path, outputs, inputs = real_layers
    manual, _ = resnet8.from_keras(model)
    manual.get_submodule(module).eps = 1e-5
    divergence = _compare(model, onnx_path, outputs, inputs, manual_model=manual).first_divergence
    assert divergence is not None and (divergence["keras_layer"], divergence["backend"]) == (layer, "manual")


@pytest.mark.real_data
def test_wrong_kernel_permutation_in_hand_written_model(real_layers):
    model, onnx_path, outputs, inputs = real_layers
    manual, _ = resnet8.from_keras(model)
    with torch.no_grad():
        manual.stack1.b.conv.conv.weight.copy_(manual.stack1.b.conv.conv.weight.transpose(2, 3).clone())
    divergence = _compare(model, onnx_path, outputs, inputs, manual_model=manual).first_divergence
    assert divergence is not None and (divergence["keras_layer"], divergence["backend"]) == ("conv2d_2", "manual")


def test_tiny_model_folded_bn_is_compared_as_one_group(tiny_converted):
    """tf2onnx folds the tiny model's BatchNorm into its conv: the conv's tensor holds the BatchNorm's
    output, found so by value, and the two are compared there as one group — never the conv alone."""
    model, _, paths, _, _ = tiny_converted
    stored = KerasLayers(paths.keras_layers)
    report = _compare(KerasModel.open(model), paths.onnx, stored.outputs, stored.inputs)
    assert report.passed, report.first_divergence
    assert report.manual_note  # the hand-written ResNet8 does not apply, and the report says so
    rows = {row.keras_layer: row for row in report.rows}
    assert not rows["conv2d"].compared and not rows["conv2d"].diffs and "folded by the converter into batch_normalization" in rows["conv2d"].note
    assert rows["batch_normalization"].fused == ["conv2d"] and rows["batch_normalization"].diffs
    assert rows["batch_normalization"].label == "conv2d + batch_normalization (folded)"
    assert rows["dense"].shared_with == [] and rows["dense"].diffs


@pytest.mark.real_data
def test_float64_values_place_every_resnet8_layer(real_run):
    """Placed by value (the graph run in float64 against Keras float64), no names: all 29 ResNet8 layers found."""
    _, paths, data = real_run
    keras = KerasModel.open(data / "models" / "pretrainedResnet.h5")
    stored, stored64 = KerasLayers(paths.keras_layers), KerasLayers(paths.keras_layers_f64)
    sources = Sources(Artifacts(keras.path, paths.onnx), keras)
    noise = layer_compare.layer_noise(stored.outputs, stored64.outputs)
    points = placement.place(keras.layers, stored64.outputs, noise, sources.reference_graph, sources.onnx_proto, stored64.inputs[:IMAGES])
    assert sum(p.compared for p in points if p.layer.class_name != "InputLayer") == 29
    assert all(p.note == "placed by value" for p in points if p.layer.class_name != "InputLayer")


@pytest.mark.real_data
def test_a_layer_not_placed_by_value_is_not_compared(real_layers, real_run, monkeypatch):
    """A fault is named at its layer; a layer whose value no tensor holds is 'not compared', never
    failed: withdraw every placement, and the same fault is no longer called."""
    model, onnx_path, outputs, inputs = real_layers
    _, paths, _ = real_run
    stored64 = KerasLayers(paths.keras_layers_f64)
    layers64 = {k: v[:IMAGES] for k, v in stored64.outputs.items()}
    sources = Sources(Artifacts(model.path, onnx_path), model)
    report = layer_compare.run(model, sources, outputs, inputs, with_manual=False, layers_f64=layers64)
    assert report.passed and report.placed_by == layer_compare.PLACED_F64
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        broken = faults.broken_onnx("symmetric_padding", onnx_path, Path(scratch) / "broken.onnx", model.path, "conv2d_6")
        sources = Sources(Artifacts(model.path, broken, onnx_reference=onnx_path), model)
        report = layer_compare.run(model, sources, outputs, inputs, with_manual=False, layers_f64=layers64)
        assert report.first_divergence["keras_layer"] == "conv2d_6"
        monkeypatch.setattr(placement, "find", lambda *args: {})
        sources = Sources(Artifacts(model.path, broken, onnx_reference=onnx_path), model)
        report = layer_compare.run(model, sources, outputs, inputs, with_manual=False, layers_f64=layers64)
    assert report.first_divergence is None and not any(row.diffs for row in report.rows)
    assert all("not compared" in row.note for row in report.rows)


@pytest.mark.real_data
def test_a_broken_copy_placed_in_itself_names_no_layer_wrongly(real_layers):
    """Without the model's own conversion to place layers in, a broken copy is searched itself: the
    faulty layer's value is nowhere in it, so it is not compared — never reported at a wrong layer."""
    model, onnx_path, outputs, inputs = real_layers
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        broken = faults.broken_onnx("conv_weight", onnx_path, Path(scratch) / "broken.onnx", model.path, "conv2d_3")
        report = _compare(model, broken, outputs, inputs, with_manual=False)
    rows = {row.keras_layer: row for row in report.rows}
    assert not rows["conv2d_3"].diffs and "not compared" in rows["conv2d_3"].note
    assert report.first_divergence is None or report.first_divergence["keras_layer"] not in {"conv2d", "conv2d_1", "conv2d_2"}


def _graph(ops):
    from onnx import helper

    nodes = [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=name) for i, (op, name) in enumerate(ops)]
    return helper.make_model(helper.make_graph(nodes, "g", [], []))


def test_counterparts_align_graphs_one_op_apart_never_by_counter_names():
    """tf2onnx may leave one more op in one conversion than in the other (EfficientNetB0: a Reshape in one
    squeeze-excite block); its counter names (`Conv__4`) then name different nodes in the two."""
    f64 = _graph([("Conv", "Conv__1"), ("Reshape", "Reshape__2"), ("Relu", "Relu__3"), ("Conv", "Conv__4"), ("Conv", "Conv__5")])
    f32 = _graph([("Conv", "Conv__1"), ("Relu", "Relu__2"), ("Conv", "Conv__3"), ("Conv", "Conv__4")])
    pairs = {name: node.name for name, node in placement.counterparts(f64, f32).items()}
    assert pairs == {"Conv__1": "Conv__1", "Relu__3": "Relu__2", "Conv__4": "Conv__3", "Conv__5": "Conv__4"}


def test_counterparts_pair_model_named_nodes_by_name_whatever_their_order():
    """NASNetMobile: tf2onnx wrote two sibling Adds in one order in one graph and in the other in the
    other; aligned by op type alone, each would be compared with the other (a false alarm)."""
    f64 = _graph([("Conv", "m/conv"), ("Add", "m/add_2/Add"), ("Add", "m/add3/Add"), ("Relu", "Relu__7")])
    f32 = _graph([("Conv", "m/conv"), ("Add", "m/add3/Add"), ("Add", "m/add_2/Add"), ("Relu", "Relu__9")])
    pairs = {name: node.name for name, node in placement.counterparts(f64, f32).items()}
    assert pairs == {"m/conv": "m/conv", "m/add_2/Add": "m/add_2/Add", "m/add3/Add": "m/add3/Add", "Relu__7": "Relu__9"}
