"""Weight faults beyond ResNet8, in zoo models nobody here wrote: one weight +2e-2 in a DepthwiseConv2D
(MobileNetV3Small), in an EfficientNetB0 expand conv and in a DenseNet121 conv. The tampered copy is
converted, then verified against the original as a user would (`verify --model GOOD --onnx
TAMPERED/model.onnx`): exit 1, the first divergence named at that layer — or at the BatchNorm the
converter fused it into, with the layer named beside it.

CI runs the MobileNetV3Small case (its model is built for tests/test_zoo.py anyway); `make zoo-test`
runs all three (minutes per model)."""

import pytest

import helpers
from pipeline.keras_file.model import KerasModel

CASES = [
    pytest.param("MobileNetV3Small", "expanded_conv_1_depthwise", marks=pytest.mark.slow),
    pytest.param("EfficientNetB0", "block2a_expand_conv", marks=pytest.mark.zoo),
    pytest.param("DenseNet121", "conv2_block1_2_conv", marks=pytest.mark.zoo),
]


@pytest.mark.parametrize("name, layer", CASES)
def test_weight_fault_in_a_zoo_model_is_named_at_its_layer(zoo_member, tmp_path, name, layer):
    row, good, out = zoo_member(name)
    assert row.verdict == "verified", row
    kernel = KerasModel.open(good).weights[layer]
    kernel = kernel.get("depthwise_kernel", kernel.get("kernel"))
    tampered = tmp_path / f"{name}.keras"
    helpers.tamper_keras_file(good, tampered, kernel)
    converted = helpers.run_cli("onnx", "--model", str(tampered), "--out", str(tmp_path / "tampered"))
    assert converted.returncode == 0, converted.stderr[-2000:]
    completed = helpers.run_cli("verify", "--model", str(good), "--onnx", str(tmp_path / "tampered" / name / "model.onnx"), "--out", str(out))
    assert completed.returncode == 1, completed.stderr[-2000:]
    line = completed.stderr.strip().splitlines()[-1]  # after the progress bars: the one error line
    assert line.startswith("error: verification failed — first divergent layer: "), line
    named = line.split("first divergent layer: ", 1)[1].split(" in ", 1)[0]
    assert named.split(" ")[0] == layer or (named.endswith("(folded)") and layer in named.split(" + ")), line
