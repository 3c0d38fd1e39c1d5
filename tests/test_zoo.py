"""The zoo in CI: one Keras Applications member with calibrated random weights through onnx, torch and
verify (`make zoo` runs all 13, as .keras and .h5). A false alarm here is a bug."""

import json

import pytest

from pipeline.common.tolerances import TRAIN_RTOL
from pipeline.stages import zoo
from pipeline.verifier import layer_compare
from pipeline.verifier.placement import NO_KERAS_OUTPUT


@pytest.mark.slow
def test_a_zoo_member_verifies_with_the_float64_proof(zoo_member):
    row, model, out = zoo_member("MobileNetV3Small")
    assert row.converted and row.verdict == "verified", row
    assert row.proof_max_abs_diff is not None and row.proof_max_abs_diff < 1e-9
    assert row.noise_ratio is not None and row.saturated_share is not None and row.saturated_share < 1
    assert row.native == "parity ✓" and row.parity_worst <= TRAIN_RTOL, row  # the native model, trained one step against Keras
    summary = out.parent
    assert json.loads((summary / "summary.json").read_text())[0]["verdict"] == "verified"
    assert "| MobileNetV3Small | calibrated random | .keras |" in (summary / "summary.md").read_text()
    # Every layer is accounted for: compared, sharing a compared tensor, fused into a compared layer, or an
    # op of the config (`x + 3.0`) that Keras gives no output for (the layer consuming it is compared).
    layers = json.loads((out / "MobileNetV3Small" / "verify.json").read_text())["layers"]
    assert layers["placed_by"] == layer_compare.PLACED_F64
    fused = {name for r in layers["layers"] for name in r["fused"]}
    assert all(r["diffs"] or r["shared_with"] or r["keras_layer"] in fused or r["note"] == NO_KERAS_OUTPUT for r in layers["layers"])
    # placed in the converted graph (the native model is compared at every layer by name, so count ONNX Runtime's)
    assert sum(any(d["backend"] == "onnxruntime" for d in r["diffs"]) for r in layers["layers"]) >= 140  # by a graph walk: 66
    # the native model at every layer Keras gives an output for, by its Keras name
    assert all(any(d["backend"] == "native" and d["passed"] for d in r["diffs"]) for r in layers["layers"] if r["note"] != NO_KERAS_OUTPUT)


@pytest.mark.zoo
def test_a_second_zoo_member_verifies_from_its_legacy_h5(zoo_member):
    """EfficientNetV2B0 as the legacy `.h5` older models arrive in: a Keras 3 file read back by Keras 3's
    legacy loader, squeeze-excite blocks, stochastic-depth Dropout with a noise shape, Normalization.
    In `make zoo-test` (3½ minutes); `make test` keeps the legacy-loader path on small Keras-3-written
    `.h5` files (test_families) and the real ResNet8."""
    row, model, out = zoo_member("EfficientNetV2B0", "h5")
    assert row.converted and row.verdict == "verified", row
    assert row.proof_max_abs_diff is not None and row.proof_max_abs_diff < 1e-9
    assert row.native == "parity ✓" and row.parity_worst <= TRAIN_RTOL, row
    summary = json.loads((out / "EfficientNetV2B0" / "verify.json").read_text())
    assert summary["float64_proof_native"]["passed"]
    layers = summary["layers"]["layers"]
    assert all(any(d["backend"] == "native" and d["passed"] for d in r["diffs"]) for r in layers)
    assert sum(any(d["backend"] == "onnxruntime" for d in r["diffs"]) for r in layers) >= 200  # placed by float64 value


def test_summary_table_says_what_did_not_convert():
    rows = [zoo.ZooRow("A", "keras", 10, True, 1e-15, 1.1, 0.0, 5, "verified", 12.0),
            zoo.ZooRow("B", "h5", 20, False, None, None, None, 0, "does not convert: op X", 3.0)]
    text = zoo.table(rows)
    assert "| B | calibrated random | .h5 | 20 | no | — |" in text and "1 of 2 verified" in text


def test_a_partial_run_adds_its_rows_to_the_earlier_ones_in_zoo_order(tmp_path):
    earlier = [zoo.ZooRow("VGG16", "keras", 23, True, 1e-15, 1.0, 0.0, 20, "verified", 50.0, "2026-11-20"),
               zoo.ZooRow("MobileNet", "h5", 91, False, None, None, None, 0, "does not convert: op X", 3.0, "2026-11-20")]
    (tmp_path / "summary.json").write_text(json.dumps([vars(r) for r in earlier]))
    rerun = zoo.ZooRow("MobileNet", "h5", 91, True, 1e-14, 1.2, 0.0, 76, "verified", 90.0, "2026-11-26")
    other = zoo.ZooRow("MobileNet", "keras", 91, True, 1e-14, 1.1, 0.0, 76, "verified", 80.0, "2026-11-26")
    rows = zoo.merged(zoo._earlier(tmp_path), [rerun, other])
    assert [(r.model, r.format, r.verdict) for r in rows] == [("MobileNet", "keras", "verified"), ("MobileNet", "h5", "verified"),
                                                               ("VGG16", "keras", "verified")]
    assert "3 of 3 verified" in zoo.table(rows) and "rows run 2026-11-20 to 2026-11-26" in zoo.table(rows)
