"""Our ONNX op converters (`converters.onnx_ops`) against ONNX Runtime, node by node: ONNX LSTM, GRU and
RNN built here with every attribute tf2onnx can set — direction, layout, initial states, sequence
lengths (a mask), non-default activations (Keras 2's hard_sigmoid), clip, peepholes, GRU's
linear_before_reset — converted by onnx2torch with our registry, run on the same inputs. ONNX Runtime
is the independent reference; the tolerance is float32 rounding over a few steps (`ATOL_RECURRENT`).
And `torch.export` takes both forms, the fused layer and the step loop, with a dynamic batch.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.converters import onnx_ops, to_fx

onnx_ops.register()

STEPS, BATCH, FEATURES, HIDDEN = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
OUTPUTS = {"LSTM": ["Y", "Y_h", "Y_c"], "GRU": ["Y", "Y_h"], "RNN": ["Y", "Y_h"]}
# float32 rounding through 5 steps of 6 units against ONNX Runtime's own kernels; measured max 4e-7
ATOL_RECURRENT = 1e-5


def _model(op: str, direction="forward", layout=0, lengths=False, initial=False, peepholes=False, outputs=None,
           **attributes) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    directions = 2 if direction == "bidirectional" else 1
    gates = GATES[op]
    weights = {
        "W": rng.normal(0, 0.5, (directions, gates * HIDDEN, FEATURES)),
        "R": rng.normal(0, 0.5, (directions, gates * HIDDEN, HIDDEN)),
        "B": rng.normal(0, 0.5, (directions, 2 * gates * HIDDEN)),
    }
    inputs = ["X", "W", "R", "B", "", "", ""]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [STEPS, BATCH, FEATURES] if layout == 0 else [BATCH, STEPS, FEATURES])]
    state_shape = [directions, BATCH, HIDDEN] if layout == 0 else [BATCH, directions, HIDDEN]
    if lengths:
        inputs[4] = "sequence_lens"
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [BATCH]))
    if initial:
        inputs[5] = "initial_h"
        graph_inputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, state_shape))
        if op == "LSTM":
            inputs[6] = "initial_c"
            graph_inputs.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, state_shape))
    if peepholes:
        weights["P"] = rng.normal(0, 0.5, (directions, 3 * HIDDEN))
        inputs.append("P")
    while not inputs[-1]:
        inputs.pop()
    outputs = outputs or OUTPUTS[op]
    node = helper.make_node(op, inputs, outputs, hidden_size=HIDDEN, direction=direction, layout=layout, **attributes)
    y_shape = [STEPS, directions, BATCH, HIDDEN] if layout == 0 else [BATCH, STEPS, directions, HIDDEN]
    shapes = {"Y": y_shape, "Y_h": state_shape, "Y_c": state_shape}
    graph = helper.make_graph([node], "recurrent", graph_inputs,
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[name]) for name in outputs],
                              initializer=[numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {}
    for value in model.graph.input:
        shape = [dim.dim_value or BATCH for dim in value.type.tensor_type.shape.dim]  # a symbolic dimension: the batch
        if value.name == "sequence_lens":
            feeds[value.name] = np.array([STEPS, 2, 4], dtype=np.int32)  # one full, two padded
        else:
            feeds[value.name] = rng.normal(0, 1, shape).astype(np.float32)
    return feeds


def _onnx_runtime(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp_path) -> list[np.ndarray]:
    """ONNX Runtime's outputs; for layout=1, which it does not run, those of the layout=0 node on the same
    inputs transposed (X (N, T, I) → (T, N, I), states (N, D, H) → (D, N, H)), transposed back."""
    import onnxruntime as ort

    layout = next((a.i for a in model.graph.node[0].attribute if a.name == "layout"), 0)
    if layout == 1:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        next(a for a in model.graph.node[0].attribute if a.name == "layout").i = 0
        for value in model.graph.input:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 3:
                dims[0].dim_value, dims[1].dim_value = dims[1].dim_value, dims[0].dim_value
        for value in model.graph.output:
            del value.type.tensor_type.shape.dim[:]
        feeds = {name: a.swapaxes(0, 1) if a.ndim == 3 else a for name, a in feeds.items()}
    path = tmp_path / "reference.onnx"
    onnx.save(model, path)
    outputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    if layout == 1:  # Y (T, D, N, H) → (N, T, D, H); states (D, N, H) → (N, D, H)
        outputs = [a.transpose(2, 0, 1, 3) if a.ndim == 4 else a.swapaxes(0, 1) for a in outputs]
    return outputs


def _compare(model: onnx.ModelProto, tmp_path, form: str | None = None):
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    feeds = _feeds(model)
    expected = _onnx_runtime(model, feeds, tmp_path)
    gm = to_fx.convert_raw(path)
    if form:
        assert form in repr(gm), repr(gm)
    with torch.no_grad():
        got = gm(*(torch.from_numpy(feeds[value.name]) for value in model.graph.input))
    got = got if isinstance(got, (tuple, list)) else (got,)
    for name, a, b in zip(model.graph.node[0].output, got, expected, strict=True):
        assert tuple(a.shape) == b.shape, name
        np.testing.assert_allclose(a.numpy(), b, atol=ATOL_RECURRENT, rtol=0, err_msg=name)
    with torch.no_grad():  # a deep copy (as `fx_optimize` makes one) computes the same
        copied = copy.deepcopy(gm)(*(torch.from_numpy(feeds[value.name]) for value in model.graph.input))
    for a, b in zip(got, copied if isinstance(copied, (tuple, list)) else (copied,), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    return gm


@pytest.mark.parametrize("op", list(GATES))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_the_fused_form_equals_onnx_runtime(op, direction, layout, tmp_path):
    extra = {"linear_before_reset": 1} if op == "GRU" else {}
    _compare(_model(op, direction, layout, initial=True, **extra), tmp_path, "fused")


@pytest.mark.parametrize("op", list(GATES))
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_the_step_loop_equals_onnx_runtime_with_sequence_lengths(op, direction, tmp_path):
    _compare(_model(op, direction, lengths=True, initial=True), tmp_path, "step loop")


@pytest.mark.parametrize("case", [
    # bidirectional: one list for both directions, alphas and betas consumed in order (a different one each)
    pytest.param(("LSTM", {"activations": ["HardSigmoid", "Tanh", "Tanh"] * 2, "activation_alpha": [0.2, 0.3],
                           "activation_beta": [0.5, 0.4]}), id="lstm-keras2-hard-sigmoid"),
    pytest.param(("GRU", {"activations": ["HardSigmoid", "Tanh"] * 2, "activation_alpha": [0.25, 0.2], "activation_beta": [0.4, 0.5]}),
                 id="gru-hard-sigmoid"),
    pytest.param(("GRU", {"linear_before_reset": 0}), id="gru-reset-before"),
    pytest.param(("LSTM", {"clip": 0.7}), id="lstm-clip"),
    pytest.param(("RNN", {"activations": ["Relu", "Relu"]}), id="rnn-relu"),
    pytest.param(("RNN", {"activations": ["LeakyRelu", "Tanh"], "activation_alpha": [0.1]}), id="rnn-leaky-and-tanh"),
])
def test_other_activations_clip_and_reset_before_equal_onnx_runtime(case, tmp_path):
    op, attributes = case
    _compare(_model(op, "bidirectional", **attributes), tmp_path)


def test_a_node_listing_only_its_sequence_output_gives_that_alone(tmp_path):
    """onnx2torch hands a node's lone output on as the module returns it: a tuple there would reach the next op."""
    _compare(_model("GRU", outputs=["Y"]), tmp_path)


def test_lstm_peepholes_equal_onnx_runtime(tmp_path):
    _compare(_model("LSTM", peepholes=True), tmp_path, "step loop")


@pytest.mark.parametrize("lengths", [False, True], ids=["fused", "step-loop"])
def test_both_forms_export_with_a_dynamic_batch(lengths, tmp_path):
    model = _model("LSTM", "bidirectional", lengths=lengths)
    gm = _compare(model, tmp_path)
    feeds = _feeds(model)
    args = tuple(torch.from_numpy(feeds[value.name]) for value in model.graph.input)
    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic = ({1: batch},) + (({0: batch},) if lengths else ())
    program = torch.export.export(gm, args, dynamic_shapes=dynamic)
    small = tuple(a[:, :2] if a.dim() == 3 else a[:2] for a in args)
    torch.testing.assert_close(program.module()(*small)[0], gm(*small)[0])


def test_a_recurrent_node_with_computed_weights_is_named(tmp_path):
    model = _model("GRU")
    weight = model.graph.initializer[0]
    model.graph.node.insert(0, helper.make_node("Identity", [weight.name], ["W_computed"]))
    model.graph.node[1].input[1] = "W_computed"
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    with pytest.raises(Exception, match="op GRU"):
        to_fx.convert_raw(path)


def _loop_model(data_dependent: bool = False, endless: bool = False, steps_from_shape: bool = False) -> onnx.ModelProto:
    """A loop as tf2onnx writes a Keras SimpleRNN: counters from constants (`t < steps`), the state
    carried, the input sequence and the weights read from the outer graph, each step's state scanned out.
    `steps_from_shape`: the sequence comes in batch first and the number of steps is read from its shape at
    run time (`Shape` → `Gather` → `Cast`), as in tf-keras's masked Bidirectional GRU."""
    rng = np.random.default_rng(2)
    f32, i32 = TensorProto.FLOAT, TensorProto.INT32
    body_nodes = [
        helper.make_node("Gather", ["X", "t"], ["x_t"]),  # X: outer
        helper.make_node("MatMul", ["x_t", "W"], ["xw"]),
        helper.make_node("MatMul", ["h", "R"], ["hr"]),
        helper.make_node("Add", ["xw", "hr"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_next"]),
        helper.make_node("Add", ["t", "one"], ["t_next"]),
        helper.make_node("Identity", ["h_next"], ["h_scan"]),
    ]
    if data_dependent:  # go on while the state's first unit is below 10: a loop on the data
        body_nodes += [helper.make_node("ReduceMax", ["h_next"], ["peak"], keepdims=0), helper.make_node("Less", ["peak", "ten"], ["go"])]
    elif endless:  # the condition passed on as it came: true for ever, under tf2onnx's "no maximum" M = 2**63 - 1
        body_nodes.append(helper.make_node("Identity", ["cond"], ["go"]))
    else:
        body_nodes.append(helper.make_node("Less", ["t_next", "limit"], ["go"]))
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("t", i32, []), helper.make_tensor_value_info("h", f32, [BATCH, HIDDEN]),
         helper.make_tensor_value_info("limit", i32, [])],
        [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in
         (("go", TensorProto.BOOL, []), ("t_next", i32, []), ("h_next", f32, [BATCH, HIDDEN]), ("limit", i32, []),
          ("h_scan", f32, [BATCH, HIDDEN]))],
        initializer=[numpy_helper.from_array(np.array(1, np.int32), "one"), numpy_helper.from_array(np.array(10, np.float32), "ten")])
    steps = "steps_read" if steps_from_shape else "steps"
    nodes = [helper.make_node("Less", ["start", steps], ["first"]),
             helper.make_node("Loop", ["most" if endless else "", "first", "start", "h0", steps], ["t_end", "h_end", "steps_end", "scanned"],
                              body=body)]
    sequence = helper.make_tensor_value_info("X", f32, [STEPS, BATCH, FEATURES])
    state = helper.make_tensor_value_info("h0", f32, [BATCH, HIDDEN])
    if steps_from_shape:  # batch first, of any batch size, as a converted Keras model's input
        sequence = helper.make_tensor_value_info("X_batch_first", f32, ["N", STEPS, FEATURES])
        state = helper.make_tensor_value_info("h0", f32, ["N", HIDDEN])
        nodes = [helper.make_node("Transpose", ["X_batch_first"], ["X"], perm=[1, 0, 2]),
                 helper.make_node("Shape", ["X_batch_first"], ["shape"]),
                 helper.make_node("Gather", ["shape", "one64"], ["steps64"], axis=0),
                 helper.make_node("Cast", ["steps64"], [steps], to=i32), *nodes]
    graph = helper.make_graph(
        nodes, "loop",
        [sequence, state],
        [helper.make_tensor_value_info("h_end", f32, [BATCH, HIDDEN]), helper.make_tensor_value_info("scanned", f32, [STEPS, BATCH, HIDDEN])],
        initializer=[numpy_helper.from_array(np.array(0, np.int32), "start"), numpy_helper.from_array(np.array(STEPS, np.int32), "steps"),
                     numpy_helper.from_array(np.array(np.iinfo(np.int64).max, np.int64), "most"),
                     numpy_helper.from_array(np.array(1, np.int64), "one64"),
                     numpy_helper.from_array(rng.normal(0, 0.5, (FEATURES, HIDDEN)).astype(np.float32), "W"),
                     numpy_helper.from_array(rng.normal(0, 0.5, (HIDDEN, HIDDEN)).astype(np.float32), "R")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _loop_against_onnx_runtime(model: onnx.ModelProto, tmp_path):
    """`model` converted (its loop counted: 5 trips) and run on the same inputs as ONNX Runtime: its final and
    scanned states equal. Returns the module and its inputs."""
    import onnxruntime as ort

    path = tmp_path / "loop.onnx"
    onnx.save(model, path)
    feeds = _feeds(model)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    gm = to_fx.convert_raw(path)
    assert "trips=5" in repr(gm)
    args = tuple(torch.from_numpy(feeds[value.name]) for value in model.graph.input)
    with torch.no_grad():
        got = gm(*args)  # onnx2torch returns every output of a node that gives the graph's: t, h, steps, scanned
    for a, b in zip((got[1], got[3]), expected, strict=True):
        np.testing.assert_allclose(a.numpy(), b, atol=ATOL_RECURRENT, rtol=0)
    return gm, args


def test_a_counted_loop_equals_onnx_runtime_and_exports(tmp_path):
    gm, args = _loop_against_onnx_runtime(_loop_model(), tmp_path)
    program = torch.export.export(gm, args)
    torch.testing.assert_close(program.module()(*args)[3], gm(*args)[3])


def test_a_loop_counting_the_steps_of_its_input_shape_is_made_static_and_equals_onnx_runtime(tmp_path):
    """The number of steps read from the sequence's shape at run time: the same at two batch sizes, so a
    constant of the model (`loop_bounds.fold`); the loop then converts as a counted one."""
    _loop_against_onnx_runtime(_loop_model(steps_from_shape=True), tmp_path)


def test_loop_bounds_that_follow_the_batch_are_left_as_they_are(tmp_path):
    """A bound read from the batch dimension differs at the two probe batches: not a constant of the model, left
    as it is (the loop converter then refuses it, naming the op)."""
    from pipeline.converters import loop_bounds

    model = _loop_model(steps_from_shape=True)
    for init in model.graph.initializer:
        if init.name == "one64":
            init.CopyFrom(numpy_helper.from_array(np.array(0, np.int64), "one64"))  # dimension 0: the batch, not the steps
    path = tmp_path / "loop.onnx"
    onnx.save(model, path)
    loop_bounds.fold(model, path)  # `first` (0 < N) is true at both batches, and folds; the limit N does not
    assert next(node for node in model.graph.node if "steps_read" in node.output).op_type == "Cast"
    with pytest.raises(Exception, match="op Loop.*depends on the data"):
        to_fx.convert_raw(path)


def test_reverse_sequence_equals_onnx_runtime_on_either_axis_order_and_exports(tmp_path):
    """ONNX ReverseSequence (the backward half of tf-keras's masked Bidirectional): each row reversed within its
    own length, the padding left in place; batch-major and time-major, against ONNX Runtime."""
    import onnxruntime as ort

    for batch_axis, time_axis, shape in ((0, 1, [BATCH, STEPS, FEATURES]), (1, 0, [STEPS, BATCH, FEATURES])):
        node = helper.make_node("ReverseSequence", ["X", "lengths"], ["Y"], batch_axis=batch_axis, time_axis=time_axis)
        graph = helper.make_graph([node], "reverse", [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape),
                                                      helper.make_tensor_value_info("lengths", TensorProto.INT64, [BATCH])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
        path = tmp_path / f"reverse_{batch_axis}.onnx"
        onnx.save(model, path)
        x = np.random.default_rng(3).normal(0, 1, shape).astype(np.float32)
        lengths = np.array([STEPS, 2, 0], np.int64)  # whole, padded, all padding
        expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x, "lengths": lengths})[0]
        gm = to_fx.convert_raw(path)
        args = (torch.from_numpy(x), torch.from_numpy(lengths))
        np.testing.assert_array_equal(gm(*args).numpy(), expected)
        program = torch.export.export(gm, args)
        np.testing.assert_array_equal(program.module()(*args).numpy(), expected)


def test_a_loop_on_the_data_is_refused_naming_the_op(tmp_path):
    path = tmp_path / "loop.onnx"
    onnx.save(_loop_model(data_dependent=True), path)
    with pytest.raises(Exception, match="op Loop.*condition depends on the data"):
        to_fx.convert_raw(path)


def test_a_loop_that_never_ends_on_its_constants_is_refused(tmp_path):
    path = tmp_path / "loop.onnx"
    onnx.save(_loop_model(endless=True), path)
    with pytest.raises(Exception, match="op Loop.*does not end within"):
        to_fx.convert_raw(path)


def test_counter_arithmetic_folds_variadic_min_and_max():
    """ONNX Min/Max take any number of operands; numpy's would take a third as its `out` buffer."""
    from pipeline.converters.onnx_ops import loop

    a, b, c = np.array(5), np.array(3), np.array(4)
    assert loop._SCALAR_OPS["Min"](a, b, c) == 3 and loop._SCALAR_OPS["Max"](a, b, c) == 5 and c == 4


def test_static_squeeze_and_unsqueeze_follow_onnx_axes():
    from pipeline.converters.fx_passes import squeeze_axes, unsqueeze_axes

    x = torch.zeros(2, 3)
    assert unsqueeze_axes(x, (-2, -1)).shape == (2, 3, 1, 1) and unsqueeze_axes(x, (0, -1)).shape == (1, 2, 3, 1)
    assert squeeze_axes(torch.zeros(1, 2, 1, 3), ()).shape == (2, 3) and squeeze_axes(torch.zeros(1, 2, 1), (-1,)).shape == (1, 2)


def _resize_model(mode: str, coordinates: str, scales: list[float], shape: list[int], runtime_scales: bool = False) -> onnx.ModelProto:
    """One ONNX Resize of X by `scales` (float32), as tf2onnx writes it: a constant, or (`runtime_scales`) computed
    at run time — here `scales · 1` from a graph input, which onnx2torch reads only when the graph runs."""
    attributes = {"mode": mode, "coordinate_transformation_mode": coordinates, "nearest_mode": "floor"}
    nodes = [helper.make_node("Resize", ["X", "", "scales", ""] if not runtime_scales else ["X", "", "computed"], ["Y"], **attributes)]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)]
    initializers = [numpy_helper.from_array(np.array(scales, np.float32), "scales")]
    if runtime_scales:
        nodes.insert(0, helper.make_node("Mul", ["scales", "one"], ["computed"]))
        inputs.append(helper.make_tensor_value_info("one", TensorProto.FLOAT, [len(scales)]))
    graph = helper.make_graph(nodes, "resize", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("mode,coordinates", [("linear", "half_pixel"), ("nearest", "tf_half_pixel_for_nn"), ("nearest", "asymmetric")])
def test_resize_equals_onnx_runtime_by_scales_that_float64_floors_short(mode, coordinates, tmp_path):
    """tf2onnx's Resize of Keras `Resizing(7, 9)` on 20×28: scales float32(7/20), float32(9/28), whose products with the
    sizes floor to 7 and 9 in float32 (ONNX Runtime) but 6 and 8 in float64 (onnx2torch's `interpolate` gave one row
    and one column short); and TensorFlow 2's nearest resize (`tf_half_pixel_for_nn`, torch's `nearest-exact`), which
    onnx2torch ran as torch's `nearest`. Against ONNX Runtime, scales constant and computed at run time."""
    import onnxruntime as ort

    shape = [2, 3, 20, 28]
    x = np.random.default_rng(5).normal(0, 1, shape).astype(np.float32)
    for runtime_scales in (False, True):
        model = _resize_model(mode, coordinates, [1, 1, 7 / 20, 9 / 28], shape, runtime_scales)
        path = tmp_path / f"resize_{runtime_scales}.onnx"
        onnx.save(model, path)
        feeds = {"X": x} | ({"one": np.ones(4, np.float32)} if runtime_scales else {})
        expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        assert expected.shape == (2, 3, 7, 9)
        got = to_fx.convert_raw(path)(*(torch.from_numpy(v) for v in feeds.values())).numpy()
        # nearest: the same pixels exactly. linear: ONNX Runtime steps by the float32 scale, torch by 20/7 — sampling
        # positions ≤ 28 px apart by ≤ 6e-8 relative, times a slope of a few units: ~1e-5 at most
        np.testing.assert_allclose(got, expected, atol=2e-5 if mode == "linear" else 0, rtol=0)
