"""Merge layers: `Add`, `Subtract`, `Multiply`, `Maximum`, `Minimum`, `Average`, `Concatenate`."""

from __future__ import annotations

from pipeline.native.layers.registry import Emitted, emits, torch_axis, unsupported


@emits("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average")
def _merge(layer, weights, inputs, context):
    vars_ = [t.var for t in inputs]
    rank = max(t.rank for t in inputs)
    if any(t.rank != rank for t in inputs):
        raise unsupported(layer, "inputs of different ranks")
    kind = layer.class_name
    if kind == "Subtract":
        return Emitted(None, f"{vars_[0]} - {vars_[1]}", rank)
    if kind in ("Maximum", "Minimum"):
        expr = vars_[0]
        for var in vars_[1:]:
            expr = f"torch.{kind.lower()}({expr}, {var})"
        return Emitted(None, expr, rank)
    joined = (" * " if kind == "Multiply" else " + ").join(vars_)
    return Emitted(None, f"({joined}) / {len(vars_)}" if kind == "Average" else joined, rank)


@emits("Concatenate")
def _concatenate(layer, weights, inputs, context):
    rank = inputs[0].rank
    axis = torch_axis(layer.config.get("axis", -1), rank)
    return Emitted(None, f"torch.cat([{', '.join(t.var for t in inputs)}], dim={axis})", rank)
