"""Models that look like users' files: trained a few hundred steps (BatchNorm statistics and weights far
from their start), written by tf-keras as a legacy `.h5` and by Keras 3 as `.keras`
(`tf_side.trained_build`). Where tf-keras loads them, tf2onnx folds each trained BatchNorm into the
convolution before it. The verdict must be right on them: PASSED clean, with every folded group compared
as one; FAILED with a 5% fault in a folded convolution, named at that convolution's group; and never
FAILED because a layer was placed wrongly."""

from __future__ import annotations

import re

import pytest

import families
import helpers
from pipeline.common.errors import CheckFailed
from pipeline.keras_file.model import KerasModel
from pipeline.stages import verify
from pipeline.verifier import placement
from pipeline.verifier.backends import Artifacts

MEMBERS = ("conv_bn_relu", "separable96", "signal_1xk", "dense_bn_autoencoder")
# A convolution followed by a BatchNormalization, and that BatchNorm, in the members whose tf-keras files
# tf2onnx folds (conv_bn_relu's .h5 is loaded by Keras 3, whose graph keeps the BatchNorm apart).
FAULTED = {"separable96": ("conv2d_1", "batch_normalization_2"), "signal_1xk": ("depthwise_conv2d", "batch_normalization_1")}


def _verify(model, out, onnx=None, reference=None):
    artifacts = Artifacts(model, onnx or out / "model.onnx", onnx_f64=out / "model_f64.onnx", onnx_reference=reference)
    return verify.run(artifacts, None, out, progress=False, plots=False)


@pytest.mark.parametrize("flavour", families.FLAVOURS)
@pytest.mark.parametrize("member", MEMBERS)
def test_trained_model_verifies_with_every_layer_accounted_for(trained_models, member, flavour):
    model, out = trained_models[(member, flavour)]
    result = _verify(model, out)
    summary = result.as_dict()
    assert result.passed, ([p for p in summary["pairs"] if not p["passed"]], summary["first_divergence"])
    assert summary["float64_proof"]["passed"], summary["float64_note"]
    assert summary["layer_warning"] is None and result.layers.passed, summary["first_divergence"]
    rows = summary["layers"]["layers"]
    fused = {name for row in rows if row["diffs"] for name in row["fused"]}
    for row in rows:  # compared, sharing a compared tensor, or folded into a compared group
        assert row["diffs"] or row["shared_with"] or row["keras_layer"] in fused, row


def test_tf_keras_files_have_their_batchnorms_folded_and_compared_as_groups(trained_models):
    """What users' Keras 2 files show and random weights hid: the tensor named after the convolution is
    its BatchNorm's output. Compared as the group, with no false alarm."""
    model, out = trained_models[("separable96", "keras2")]
    rows = {row.keras_layer: row for row in _verify(model, out).layers.rows}
    groups = [row.label for row in rows.values() if row.fused]
    assert "conv2d_1 + batch_normalization_2 (folded)" in groups and "depthwise_conv2d + batch_normalization_1 (folded)" in groups, groups
    assert all(row.passed for row in rows.values())


@pytest.mark.parametrize("flavour", families.FLAVOURS)
@pytest.mark.parametrize("member", sorted(FAULTED))
def test_a_fault_in_a_folded_convolution_is_named_there(trained_models, tmp_path, member, flavour):
    """5% on one kernel element of a convolution whose BatchNorm follows, the faulty file converted as the
    user would and verified against the original: FAILED, first divergence at that convolution (in the
    group it was folded into, where tf2onnx folded it)."""
    model, out = trained_models[(member, flavour)]
    conv, norm = FAULTED[member]
    bad = tmp_path / f"bad{model.suffix}"
    helpers.plant_kernel_fault(model, bad, conv)
    families.convert_all([(bad, tmp_path / "bad_out")])
    result = _verify(model, out, onnx=tmp_path / "bad_out" / "model.onnx", reference=out / "model.onnx")
    assert not result.passed
    divergence = result.layers.first_divergence
    assert divergence is not None and divergence["max_abs_diff"] > divergence["tolerance"]
    assert divergence["keras_layer"] in (conv, norm) and conv in divergence["label"], divergence
    with pytest.raises(CheckFailed, match=re.escape(f"first divergent layer: {divergence['label']}")):
        result.raise_if_failed()


def test_a_wrong_layer_assignment_cannot_fail_a_good_conversion(trained_models, monkeypatch):
    """Plant the placement's worst mistake — every claim moved to the next layer's tensor — on a correct
    conversion: layers may then differ, but the verdict stands on the outputs and the float64 proof."""
    model, out = trained_models[("separable96", "keras2")]
    honest = placement.find

    def shifted(layers, *args):
        found = honest(layers, *args)
        names = [layer.name for layer in layers if layer.name in found]
        return {name: found[following] for name, following in zip(names, names[1:], strict=False)}

    monkeypatch.setattr(placement, "find", shifted)
    result = _verify(model, out)
    assert result.layers.first_divergence is not None  # the planted mistake does show in the layer rows...
    assert result.passed and result.layer_warning  # ...as a warning, never as FAILED
    result.raise_if_failed()


def test_trained_models_are_legacy_h5_and_keras_files(trained_models):
    for (member, flavour), (model, _) in trained_models.items():
        assert model.suffix == (".h5" if flavour == "keras2" else ".keras")
        assert KerasModel.open(model).layers, member
