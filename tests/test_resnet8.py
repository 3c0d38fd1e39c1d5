import shutil

import h5py
import numpy as np
import pytest
import torch

from pipeline.keras_file.model import KerasModel
from pipeline.verifier import resnet8
from pipeline.common.errors import BadInput, NotApplicable


def test_tf_same_pad_is_asymmetric_for_stride_2():
    x = torch.ones(1, 1, 4, 4)
    padded = resnet8.tf_same_pad(x, kernel=3, stride=2)
    assert padded.shape[-2:] == (5, 5)
    assert padded[0, 0, 0].sum() == 4 and padded[0, 0, -1].sum() == 0  # 0 rows before, 1 after
    assert resnet8.tf_same_pad(x, kernel=3, stride=1).shape[-2:] == (6, 6)
    assert resnet8.tf_same_pad(x, kernel=1, stride=2).shape[-2:] == (4, 4)


@pytest.mark.real_data
def test_loads_every_tensor_by_name(real_paths):
    model, table = resnet8.from_keras(KerasModel.open(real_paths[0]))
    assert len(table) == 48  # 9 convs × 2 + 7 BN × 4 + dense × 2
    assert model.config.bn_eps == pytest.approx(1e-3)
    row = next(r for r in table if r.h5_path.startswith("conv2d_4/"))
    assert row.torch_key == "stack2.b.conv.conv.weight" and row.keras_shape == (3, 3, 32, 32)
    assert next(r for r in table if r.h5_path.startswith("dense/") and "kernel" in r.h5_path).torch_shape == (10, 64)


@pytest.mark.real_data
def test_matches_keras_reference(real_run):
    from pipeline.data import checkset
    from pipeline.verifier.keras_reference import KerasReference

    _, paths, data = real_run
    model, _ = resnet8.from_keras(KerasModel.open(data / "models" / "pretrainedResnet.h5"))
    reference = KerasReference(paths.keras_reference)
    name = checkset.set_name(256, (0.0, 255.0))
    x = torch.from_numpy(reference.inputs(name))
    with torch.inference_mode():
        probs = model(x).numpy()
    np.testing.assert_allclose(probs, reference.outputs()[name].probs, atol=1e-5, rtol=0)


@pytest.mark.real_data
@pytest.mark.parametrize("damage", ["extra_tensor", "wrong_shape"])
def test_unmatched_or_misshaped_tensor_fails(real_paths, tmp_path, damage):
    path = tmp_path / "broken.h5"
    shutil.copy(real_paths[0], path)
    with h5py.File(path, "r+") as handle:
        group = handle["model_weights/conv2d_4/conv2d_4"]
        if damage == "extra_tensor":
            group.create_dataset("stray:0", data=np.zeros(3, np.float32))
        else:
            del group["bias:0"]
            group.create_dataset("bias:0", data=np.zeros(31, np.float32))
    with pytest.raises(BadInput, match="stray|expected"):
        resnet8.from_keras(KerasModel.open(path))


def test_other_models_are_not_applicable(tiny_model):
    with pytest.raises(NotApplicable):
        resnet8.from_keras(KerasModel.open(tiny_model))
