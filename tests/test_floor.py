"""The floor (`stages.floor`): the bare tools — load, tf2onnx with its defaults, onnx2torch, nothing checked — against
the pipeline's verdict, model by model. Where the bare tools give Keras's outputs, the pipeline must pass.

In CI the bare tools run for real on the tiny model (a TensorFlow process) and the pipeline's verdict is planted as a
failure: the floor must be reported broken, exit 1. `make zoo-test` runs `keras2torch floor` end to end on a
recurrent model the bare tools cannot convert (onnx2torch has no LSTM) and the pipeline proves.
"""

from __future__ import annotations

import json
import shutil

import pytest

import helpers


def test_the_bare_tools_equal_on_the_tiny_model_and_a_failing_pipeline_breaks_the_floor(tiny_model, tmp_path, monkeypatch):
    from pipeline.stages import floor

    monkeypatch.setattr(floor, "pipeline_verdict", lambda model, out, data: (1, "keras2torch: NOT EQUAL; planted"))
    (row,) = floor.run([tiny_model], tmp_path, 15, progress=lambda line: None)
    assert row.bare_equal and row.bare.startswith("equal: max |Δ|"), row.bare
    assert row.broken and not row.pipeline_passed
    text = (tmp_path / "floor.md").read_text()
    assert "**1 of 1** equal" in text and "**0 of 1** PASSED" in text and "**Floor broken on 1: tiny.h5.**" in text
    assert json.loads((tmp_path / "floor.json").read_text())[0]["broken"]


def test_the_floor_names_how_far_the_bare_tools_got(tmp_path):
    from pipeline.stages import floor

    unreadable = tmp_path / "nothing.h5"
    unreadable.write_bytes(b"not an HDF5 file")
    equal, said = floor.bare_verdict(unreadable, tmp_path / "bare", 15)
    assert not equal and said.startswith("not loaded: "), said


@pytest.mark.zoo  # a whole `convert` (~40 s) and a TensorFlow process: `make zoo-test`
def test_keras2torch_floor_passes_an_lstm_the_bare_tools_cannot_convert(tmp_path):
    model = tmp_path / "recurrent_text.h5"
    shutil.copy(helpers.ROOT / "tests" / "data" / "fuzz_bases" / model.name, model)
    completed = helpers.run_cli("floor", str(model), "--out", str(tmp_path / "floor"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    (row,) = json.loads((tmp_path / "floor" / "floor.json").read_text())
    assert not row["bare_equal"] and "operation_type='LSTM'" in row["bare"] and row["pipeline_passed"], row
