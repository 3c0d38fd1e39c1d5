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



def test_check_sets_shrink_to_the_memory_bound_and_only_there():
    resnet8 = checkset.sample_bytes([(32, 32, 3), (10,)])
    vgg16 = checkset.sample_bytes([(224, 224, 3), (1000,)])
    assert checkset.random_sizes(resnet8, 3) == checkset.random_sizes(vgg16, 3) == checkset.RANDOM_BATCH_SIZES
    autoencoder = checkset.sample_bytes([(896, 896, 3), (896, 896, 3)])  # 19 MB a sample, in and out
    sizes = checkset.random_sizes(autoencoder, 3)
    assert sizes[:2] == (1, 7) and 3 * sum(sizes) * autoencoder <= checkset.CHECK_COPY_BYTES
    assert checkset.random_sizes(checkset.CHECK_COPY_BYTES * 2, 3) == (1,)  # never none: one sample is checked
    assert checkset.sample_bytes([(None, 8)]) == 4 * checkset.OPEN_DIMENSION_LENGTH * 8


def test_layer_inputs_shrink_to_the_memory_bound():
    layout = checkset.Layout.of(["input"], [(4,)])
    tests = np.zeros((500, 4), np.float32)
    full = checkset.layer_inputs(layout, tests)
    assert len(full) == checkset.LAYER_TEST_IMAGES + 3 * checkset.LAYER_RANDOM_PER_RANGE
    few = checkset.layer_inputs(layout, tests, per_sample=checkset.CHECK_COPY_BYTES // 10)
    assert len(few) == 5 + 3 * 1  # half the room to test images, one random input per range at least
    assert len(checkset.layer_inputs(layout, None, per_sample=checkset.CHECK_COPY_BYTES)) == 3


def test_a_model_of_open_length_gets_sets_at_the_other_lengths_kept_apart_from_the_check_sets(tmp_path):
    """Sets at `OTHER_LENGTHS` for an input of open length, token ids drawn as at the check length, none for a fixed
    input; a reference file holding them gives them apart (`length_sets`), never among the check sets the artifacts
    converted at one length are run on."""
    from pipeline.verifier.keras_reference import KerasReference

    tokens = {"input": checkset.TokenIds(50, mask_zero=True)}
    sets = {name: inputs for length in checkset.OTHER_LENGTHS
            for name, inputs in checkset.length_sets((None,), length, ((0.0, 49.0),), tokens).items()}
    assert sorted(sets) == ["length50_random_7_0_49", "length9_random_7_0_49"]
    assert sets["length9_random_7_0_49"].shape == (7, 9) and (sets["length50_random_7_0_49"][1:] == 0).any()
    assert checkset.checks_other_lengths([(None,)], 1) and not checkset.checks_other_lengths([(20,)], 1)
    assert not checkset.checks_other_lengths([(None,), (None,)], 1) and not checkset.checks_other_lengths([(None,)], 2)
    arrays = {f"{name}/{part}": np.zeros((7, 2), np.float32) for name in ("random_7_0_1", *sets) for part in ("inputs", "probs")}
    np.savez(tmp_path / "reference.npz", **arrays)
    reference = KerasReference(tmp_path / "reference.npz")
    assert reference.set_names() == ["random_7_0_1"] and list(reference.outputs()) == ["random_7_0_1"]
    assert sorted(reference.length_sets()) == [9, 50] and list(reference.length_sets()[9]) == ["length9_random_7_0_49"]
    assert sorted(reference.length_outputs()) == sorted(sets)
