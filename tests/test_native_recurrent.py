"""The native model's recurrent module (`keras_ops.KerasRNN`) on its own, without TensorFlow: its explicit step
loop — what runs under a mask, Keras 2's hard_sigmoid or a GRU resetting before its product — against torch's
fused kernels on the same weights, and a mask against the sequence cut to its length (what a Keras mask means:
masked steps skipped). Keras itself is the reference in tests/test_sequences.py; here each form is held to
the other, so a wrong gate in either shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.native.keras_ops import KerasRNN
from pipeline.native.layers.registry import WeightRule
from pipeline.native.layers.recurrent import GRU_GATES

FEATURES, UNITS, STEPS, BATCH = 5, 4, 7, 3
ATOL = 1e-5  # float32 rounding over 7 steps of 4 units: measured max 6e-7


def _module(cell: str, merge_mode: str | None, return_sequences: bool) -> KerasRNN:
    torch.manual_seed(0)
    module = KerasRNN(cell, FEATURES, UNITS, return_sequences, merge_mode=merge_mode)
    with torch.no_grad():
        for name, parameter in module.rnn.named_parameters():
            if name.startswith("bias_hh") and not parameter.requires_grad:
                continue  # Keras's one bias: torch's second stays zero
            parameter.normal_(0, 0.5)
    return module.eval()


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("merge_mode", [None, "concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_the_step_loop_equals_torchs_fused_kernel(cell, merge_mode, return_sequences):
    module = _module(cell, merge_mode, return_sequences)
    x = torch.randn(BATCH, FEATURES, STEPS)  # channels-first, as inside the generated model
    with torch.no_grad():
        fused = module(x)
        stepped = module(x, torch.ones(BATCH, STEPS, dtype=torch.bool))  # a mask masking nothing: the step loop
    assert module.fused
    torch.testing.assert_close(stepped, fused, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
def test_initial_and_final_states_agree_between_the_step_loop_and_the_fused_kernel(cell):
    """A seq2seq's encoder returning its states (`return_state`) and its decoder started from them
    (`initial_state`): the final states follow the output (h, and c for an LSTM), h is the last output, the step
    loop and torch's kernel agree, and a run continued from a cut's final states is the whole run."""
    module = _module(cell, None, return_sequences=False)
    module.return_state = True
    x = torch.randn(BATCH, FEATURES, STEPS)
    count = 2 if cell == "LSTM" else 1
    start = [torch.randn(BATCH, UNITS) for _ in range(count)]
    with torch.no_grad():
        fused = module(x, initial_state=start)
        stepped = module(x, torch.ones(BATCH, STEPS, dtype=torch.bool), initial_state=start)
        head = module(x[..., :3], initial_state=start)
        continued = module(x[..., 3:], initial_state=list(head[1:]))
        from_zeros = module(x)
    assert len(fused) == 1 + count and all(state.shape == (BATCH, UNITS) for state in fused[1:])
    torch.testing.assert_close(fused[1], fused[0], atol=0, rtol=0)  # h: the last step's output
    for a, b, c in zip(fused, stepped, continued, strict=True):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=0)
        torch.testing.assert_close(c, a, atol=ATOL, rtol=0)
    assert (fused[0] - from_zeros[0]).abs().max() > 1e-2  # the initial state is used


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_a_bidirectional_layers_states_are_each_directions_in_keras_order(cell):
    """Bidirectional with `return_state`: the forward direction's states, then the backward's (h, and c for an LSTM),
    as Keras returns them; each h is its direction's half of the output, the step loop and torch's kernel agree, and
    `initial_state` in the same order starts each direction from its own — the backward start moves the backward
    half alone."""
    module = _module(cell, "concat", return_sequences=False)
    module.return_state = True
    x = torch.randn(BATCH, FEATURES, STEPS)
    count = 2 if cell == "LSTM" else 1
    start = [torch.randn(BATCH, UNITS) for _ in range(2 * count)]
    moved = [*start[:count], *(state + 1 for state in start[count:])]
    with torch.no_grad():
        fused = module(x, initial_state=start)
        stepped = module(x, torch.ones(BATCH, STEPS, dtype=torch.bool), initial_state=start)
        backward_moved = module(x, initial_state=moved)
    assert len(fused) == 1 + 2 * count
    torch.testing.assert_close(fused[1], fused[0][:, :UNITS], atol=0, rtol=0)  # forward h: its last step's output
    torch.testing.assert_close(fused[1 + count], fused[0][:, UNITS:], atol=0, rtol=0)  # backward h: its last, at step 0
    for a, b in zip(fused, stepped, strict=True):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=0)
    torch.testing.assert_close(backward_moved[0][:, :UNITS], fused[0][:, :UNITS], atol=0, rtol=0)
    assert (backward_moved[0][:, UNITS:] - fused[0][:, UNITS:]).abs().max() > 100 * ATOL  # far above float32 rounding


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("merge_mode", [None, "concat"])
def test_a_masked_padded_sequence_computes_what_the_sequence_cut_to_its_length_does(cell, merge_mode):
    """Post-padding masked out: the last output (both directions) is the unpadded sequence's."""
    module = _module(cell, merge_mode, return_sequences=False)
    x = torch.randn(1, FEATURES, STEPS)
    length = 4
    mask = torch.arange(STEPS)[None, :] < length
    with torch.no_grad():
        padded = module(torch.cat([x[..., :length], torch.randn(1, FEATURES, STEPS - length)], dim=2), mask)
        cut = module(x[..., :length])
    torch.testing.assert_close(padded, cut, atol=ATOL, rtol=0)


def test_a_gru_resetting_before_its_product_differs_from_one_resetting_after():
    """Keras's reset_after=False is another function: the planted fault of a wrong `reset_after` must show."""
    module = _module("GRU", None, return_sequences=False)
    x = torch.randn(BATCH, FEATURES, STEPS)
    with torch.no_grad():
        after = module(x)
        module.reset_after, module.fused = False, False
        before = module(x)
    assert float((after - before).abs().max()) > 1e-2


def test_gate_reordering_and_a_bias_of_two_rows_map_to_torch_and_back():
    """A GRU's Keras kernel (z, r, h) into torch's (r, z, n) and its two-row bias into torch's two biases, through
    the rule weights_map.json records."""
    kernel = np.arange(FEATURES * 3 * UNITS, dtype=np.float32).reshape(FEATURES, 3 * UNITS)
    rule = WeightRule("rnn.weight_ih_l0", (1, 0), gates=GRU_GATES)
    torch_kernel = rule.apply(kernel)
    z, r, h = np.split(kernel.T, 3)
    np.testing.assert_array_equal(torch_kernel, np.concatenate([r, z, h]))
    assert WeightRule.from_map(rule.as_map("gru")) == WeightRule("gru.rnn.weight_ih_l0", (1, 0), gates=GRU_GATES)
    bias = np.arange(2 * 3 * UNITS, dtype=np.float32).reshape(2, 3 * UNITS)
    two = WeightRule(("rnn.bias_ih_l0", "rnn.bias_hh_l0"), gates=GRU_GATES)
    tensors = two.tensors(bias)
    np.testing.assert_array_equal(tensors["rnn.bias_hh_l0"], np.concatenate([bias[1, UNITS:2 * UNITS], bias[1, :UNITS], bias[1, 2 * UNITS:]]))
    assert two.as_map("gru")["key"] == ["gru.rnn.bias_ih_l0", "gru.rnn.bias_hh_l0"]
