"""The check sets: random inputs over the model's own range where it states one."""

import numpy as np
import pytest

from pipeline.common.errors import BadInput
from pipeline.data import checkset
from pipeline.keras_file.graph import KerasLayer, input_ranges


def _graph(first: KerasLayer) -> list[KerasLayer]:
    return [KerasLayer("in", "InputLayer", {}, ()), first]


@pytest.mark.parametrize("config, expected", [
    ({"scale": 1 / 255, "offset": 0.0}, (0.0, 255.0)),
    ({"scale": 1 / 127.5, "offset": -1.0}, (0.0, 255.0)),
    ({"scale": 1.0, "offset": 0.0}, (0.0, 1.0)),
])
def test_rescaling_states_the_input_range(config, expected):
    (found,) = input_ranges(_graph(KerasLayer("rescale", "Rescaling", config, ("in",))))
    assert found == pytest.approx(expected)


def test_normalization_states_mean_plus_minus_three_sigma():
    (found,) = input_ranges(_graph(KerasLayer("norm", "Normalization", {"mean": [10.0, 20.0], "variance": [4.0, 1.0]}, ("in",))))
    assert found == pytest.approx((4.0, 23.0))


def test_no_range_stated_means_the_default_ranges():
    assert input_ranges(_graph(KerasLayer("c", "Conv2D", {}, ("in",)))) is None
    assert checkset.choose_ranges(None, None) == checkset.DEFAULT_RANGES
    assert checkset.choose_ranges(((0.0, 255.0),), (0.0, 1.0)) == ((0.0, 1.0),)


def test_random_batches_cover_each_range_and_size():
    sets = checkset.random_batches((4,), ((0.0, 1.0), (-1.0, 1.0)))
    assert len(sets) == 2 * len(checkset.RANDOM_BATCH_SIZES)
    assert checkset.ranges_of(sets) == [(-1.0, 1.0), (0.0, 1.0)]  # lowest first
    low = sets[checkset.set_name(256, (-1.0, 1.0))]
    assert low.min() < -0.9 and low.max() > 0.9 and checkset.batch_size_of(checkset.set_name(256, (-1.0, 1.0))) == 256
    assert np.array_equal(sets[checkset.set_name(7, (0.0, 1.0))], checkset.random_batches((4,), ((0.0, 1.0), (-1.0, 1.0)))["random_7_0_1"])


@pytest.mark.parametrize("text", ["1", "a,b", "5,1", "0,inf"])
def test_bad_input_range_is_bad_input(text):
    with pytest.raises(BadInput, match="--input-range"):
        checkset.parse_range(text)


def test_check_sets_of_a_large_model_are_cut_to_fit_memory():
    """ResNet8 keeps its batches; a 896×896 autoencoder's sets and layer captures fit MAX_SET_BYTES and
    MAX_LAYER_BYTES, still at batch 1 and at a larger batch, every range with a layer sample."""
    resnet8 = 4 * (32 * 32 * 3 + 10 + 2 * 32 * 32 * 16)
    assert checkset.random_sizes(resnet8) == checkset.RANDOM_BATCH_SIZES
    ae = 4 * (2 * 896 * 896 * 3 + 2 * 448 * 448 * 64)
    sizes = checkset.random_sizes(ae)
    assert sizes[0] == 1 and len(sizes) >= 2 and max(sizes) * ae <= checkset.MAX_SET_BYTES
    assert checkset.random_sizes(10 * checkset.MAX_SET_BYTES) == (1,)  # one sample too large: batch 1 alone
    tests, per_range = checkset.layer_counts(4 * 896 * 896 * 3 * 20, 3)
    assert per_range >= 1 and (tests + 3 * per_range) * 4 * 896 * 896 * 3 * 20 <= checkset.MAX_LAYER_BYTES
    assert checkset.layer_counts(10_000, 3) == (checkset.LAYER_TEST_IMAGES, checkset.LAYER_RANDOM)
