"""Float32 judged against the model's own rounding, measured against its float64 rebuild: a correct
conversion of a model driven far out of its input range passes; saturated outputs are reported as no
evidence; the float64 proof catches a change far below float32 noise."""

from __future__ import annotations

import numpy as np
import pytest

import helpers
from pipeline.common.errors import CheckFailed
from pipeline.common.tolerances import ATOL_PROB, NOISE_FACTOR
from pipeline.stages import to_onnx, to_torch, verify
from pipeline.verifier import precision
from pipeline.verifier.backends import Artifacts, Outputs
from pipeline.verifier.compare import compare

# A small CNN trained, as it were, on inputs in [0, 1] and fed the check set's 0..255: its logits reach
# thousands, with class differences of a few units (a head whose columns are nearly equal), so float32
# rounding alone moves its probabilities by far more than 1e-5. `saturated`: the same with class
# differences 1e5× larger, whose softmax is exactly one-hot on every input range.
OUT_OF_RANGE_SCRIPT = """
import sys, numpy as np, keras
from pathlib import Path
keras.utils.set_random_seed(7)
rng = np.random.default_rng(7)
for name, spread in (("out_of_range", 1.0), ("saturated", 1e5)):
    x = inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    base = rng.uniform(0.5, 1.5, (8, 1))
    model.get_layer("head").set_weights([base * 250 + spread * 0.02 * rng.normal(size=(8, 10)), np.zeros(10)])
    model.save(str(Path(sys.argv[1]) / f"{name}.keras"))
"""


@pytest.fixture(scope="module")
def unnormalised(tmp_path_factory):
    """{name: (model file, artifacts folder, VerifyResult)} of the two models above, each through onnx, torch and verify."""
    folder = tmp_path_factory.mktemp("unnormalised")
    helpers.run_tf_script(OUT_OF_RANGE_SCRIPT, str(folder))
    results = {}
    for name in ("out_of_range", "saturated"):
        model, out = folder / f"{name}.keras", folder / "out"
        onnx_result = to_onnx.run(model, out, None)
        paths = onnx_result.onnx.parent
        torch_result = to_torch.run(onnx_result.onnx, paths)
        artifacts = Artifacts(model, onnx_result.onnx, torch_result.pt2, torch_result.pt2_opt, paths / "model_f64.onnx")
        results[name] = (model, paths, verify.run(artifacts, None, paths, progress=False, plots=False))
    return results


def test_correct_conversion_far_out_of_its_input_range_passes(unnormalised):
    _, _, result = unnormalised["out_of_range"]
    summary = result.as_dict()
    assert summary["keras_float32_noise"] > ATOL_PROB  # the fixed 1e-5 gate would call this correct conversion wrong
    assert result.passed, [p for p in summary["pairs"] if not p["passed"]]
    assert summary["float64_proof"]["passed"] and summary["float64_proof"]["max_abs_diff"] < 1e-9
    assert all(ratio <= NOISE_FACTOR for ratio in summary["noise_ratios"].values()), summary["noise_ratios"]
    assert not summary["no_evidence"]


def test_saturated_outputs_are_reported_as_no_evidence(unnormalised):
    summary = unnormalised["saturated"][2].as_dict()
    assert summary["no_evidence"]
    assert all(s["saturated"] + s["collapsed"] == s["samples"] for s in summary["saturation"].values())
    from pipeline.stages import report

    assert "not evidence" in report.verify_table(summary)


def test_float64_proof_catches_a_change_below_float32_noise(unnormalised, tmp_path):
    """One kernel weight of the float64 conversion moved by 1e-7 — below float32 resolution at this
    scale, invisible to every float32 check — fails the proof."""
    import shutil

    from pipeline.keras_file.model import KerasModel

    model, out, _ = unnormalised["out_of_range"]
    work = tmp_path / out.name
    shutil.copytree(out, work)
    kernel = KerasModel.open(model).weights["conv2d_1"]["kernel"]
    helpers.perturb_onnx_kernel(work / "model_f64.onnx", work / "model_f64.onnx", kernel, delta=1e-7)
    result = verify.run(Artifacts(model, work / "model.onnx", onnx_f64=work / "model_f64.onnx"), None, work, progress=False, plots=False)
    assert result.outputs_passed and not result.passed
    assert not result.proof.passed and result.proof.max_abs_diff > result.proof.tolerance
    with pytest.raises(CheckFailed, match="float64 proof"):
        result.raise_if_failed()


def _outputs(values: np.ndarray) -> dict[str, Outputs]:
    return {"set": Outputs(values)}


def test_noise_widens_the_bound_and_near_ties_do_not_fail():
    rng = np.random.default_rng(0)
    k64 = rng.dirichlet(np.ones(10), size=50)
    k64[0, :2] = 0.3  # an exact tie in float64: its argmax may flip in float32
    k32 = k64 + rng.normal(0, 2e-5, k64.shape)
    backend = k64 + rng.normal(0, 2e-5, k64.shape)
    backend[0, 1] += 1e-5
    noise = precision.measure(_outputs(k32), _outputs(k64))
    assert noise.outputs > ATOL_PROB
    assert not compare("b", _outputs(backend), "keras", _outputs(k32), classifier=True).passed  # fixed 1e-5: a false alarm
    widened = compare("b", _outputs(backend), "keras", _outputs(k32), classifier=True, noise=noise)
    assert widened.passed and widened.tolerance == pytest.approx(NOISE_FACTOR * noise.outputs)
    broken = backend.copy()
    broken[5] = np.roll(broken[5], 1)  # a real fault: one sample's classes shuffled
    assert not compare("b", _outputs(broken), "keras", _outputs(k32), classifier=True, noise=noise).passed


def test_saturation_counts():
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.7, 0.3]], dtype=np.float32)
    found = precision.saturation(_outputs(probs), classifier=True)
    assert found == {"set": {"samples": 3, "saturated": 1, "collapsed": 1}}
    assert not precision.no_evidence(found) and precision.no_evidence(precision.saturation(_outputs(probs[:2]), True))
