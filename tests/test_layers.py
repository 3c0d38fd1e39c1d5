"""The supported-layers table (`docs/layers.md`) is what `python -m pipeline layers` generates from the
code and the tests today: an edit to either that changes a row fails here until the page is regenerated."""

from __future__ import annotations

import helpers
from pipeline.stages import layers


def test_the_committed_page_is_the_generated_one():
    committed = (helpers.ROOT / layers.PAGE).read_text()
    assert committed == layers.table(), "docs/layers.md is stale: run `python -m pipeline layers` and commit it"


def test_a_class_is_credited_only_where_a_verified_model_holds_it():
    found = layers.tested()
    assert "trained_build._text_gru_masked" in found["GRU"] and "trained_build._sensor_simple_rnn" in found["SimpleRNN"]
    assert "Lambda" not in found  # only refusal tests build one
    assert not any("_two_inputs" in where for places in found.values() for where in places)  # a fuzz base, not verified
