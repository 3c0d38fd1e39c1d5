"""ONNX `Resize`: onnx2torch's converter, with the two things it gets wrong on tf2onnx's graphs put right.

- **The output size, by scales.** onnx2torch hands the scales to `F.interpolate`, which takes
  `floor(size · scale)` in float64; ONNX Runtime multiplies in float32. A scale computed at run time of
  float32(10/12) times 12 is 10.0 in float32 but 9.99… in float64: one row short. Here the size is computed
  in float32, as ONNX Runtime does, and the resize goes by that size — stepping by input/output size, as
  TensorFlow does, rather than by the rounded scale. (Constant scales are rewritten to sizes before, in the
  graph itself: `onnx_fixes.rewrite_resize_scales`.)
- **TensorFlow's nearest neighbour.** tf2onnx writes TensorFlow 2's nearest resize (half-pixel centres) as
  `coordinate_transformation_mode="tf_half_pixel_for_nn"`, `nearest_mode="floor"`: source `floor((y + ½) ·
  in/out)`, which is torch's `nearest-exact`. onnx2torch maps every nearest resize to torch's `nearest`
  (`floor(y · in/out)`, ONNX's `asymmetric`), and warns: Keras `Resizing(interpolation="nearest")` to a size
  that is not a whole multiple then samples other pixels.

Everything else (linear, cubic, their coordinate modes, onnx2torch's warnings) is onnx2torch's.
"""

from __future__ import annotations

import warnings

import torch
from onnx2torch.node_converters.resize import OnnxResize, _onnx_mode_to_torch_mode

from pipeline.converters.onnx_ops import replace_converter


class Resize(OnnxResize):
    """onnx2torch's `OnnxResize`; by scales, the output size is `floor(size · scale)` in float32; `nearest_exact`:
    a nearest resize with half-pixel centres (torch's `nearest-exact`)."""

    def __init__(self, *args, nearest_exact: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.nearest_exact = nearest_exact

    def torch_mode(self, spatial_dims: int) -> str:
        """`F.interpolate`'s mode for this resize over `spatial_dims` dimensions."""
        return "nearest-exact" if self.nearest_exact else _onnx_mode_to_torch_mode(self.onnx_mode, spatial_dims)

    def forward(self, input_tensor: torch.Tensor, roi: torch.Tensor | None = None, scales: torch.Tensor | None = None,
                sizes: torch.Tensor | None = None) -> torch.Tensor:
        if not self.ignore_roi and roi is not None and roi.nelement():
            raise NotImplementedError("roi logic is not implemented.")
        if sizes is None or not sizes.nelement():
            if scales is None or not scales.nelement():
                raise ValueError("a Resize with neither scales nor sizes")
            sizes = torch.floor(torch.tensor(input_tensor.shape, dtype=torch.float32) * scales.to(torch.float32)).to(torch.int64)
        sizes = [int(v) for v in sizes.tolist()]
        if sizes[:2] != list(input_tensor.shape[:2]):
            raise NotImplementedError("Pytorch's interpolate cannot resize channel or batch dimensions.")
        return torch.nn.functional.interpolate(input_tensor, size=sizes[2:], mode=self.torch_mode(input_tensor.dim() - 2),
                                               align_corners=self.align_corners)


@replace_converter("Resize", 11)
@replace_converter("Resize", 13)
def _(node, graph, onnx2torch_converter):
    attributes = node.attributes
    nearest_exact = (attributes.get("mode", "nearest") == "nearest" and attributes.get("nearest_mode") == "floor"
                     and attributes.get("coordinate_transformation_mode") == "tf_half_pixel_for_nn")
    with warnings.catch_warnings():
        if nearest_exact:  # its warning that torch's nearest samples other pixels: not so here
            warnings.simplefilter("ignore")
        result = onnx2torch_converter(node, graph)
    theirs = result.torch_module
    return result._replace(torch_module=Resize(mode=theirs.onnx_mode, align_corners=theirs.align_corners, ignore_roi=theirs.ignore_roi,
                                               ignore_bs_ch_size=theirs.ignore_bs_ch_size, nearest_exact=nearest_exact))
