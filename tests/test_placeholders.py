"""The import/export boundary of the ids: one -300 per crop (original Ovis 1.6/2) <-> one per visual token (ours)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovis_lit.constants import IGNORE_ID, IMAGE_ATOM_ID
from ovis_lit.processing.image import placeholders_for_grid
from ovis_lit.processing.placeholders import from_original_ids, to_original_ids


def test_each_crop_becomes_a_run_of_its_visual_tokens():
    original = placeholders_for_grid(1, 2)  # start, global, partition, crop, column separator, crop, end
    ids, labels = from_original_ids([7, *original, 8], 3, [IGNORE_ID] * (len(original) + 1) + [8])
    assert ids == [7, -301, *[IMAGE_ATOM_ID] * 3, -302, *[IMAGE_ATOM_ID] * 3, -303, *[IMAGE_ATOM_ID] * 3, -305, 8]
    assert labels == [IGNORE_ID] * (len(ids) - 1) + [8]
    assert to_original_ids(ids, 3, labels) == ([7, *original, 8], [IGNORE_ID] * (len(original) + 1) + [8])


@given(
    st.lists(st.sampled_from([IMAGE_ATOM_ID, -301, -302, -305, 0, 5, 9]), max_size=30),
    st.integers(min_value=1, max_value=6),
)
def test_round_trip(original, per_crop):
    labels = [t if t >= 0 else IGNORE_ID for t in original]
    ids, expanded_labels = from_original_ids(original, per_crop, labels)
    assert len(ids) == len(original) + original.count(IMAGE_ATOM_ID) * (per_crop - 1)
    assert ids.count(IMAGE_ATOM_ID) == original.count(IMAGE_ATOM_ID) * per_crop
    assert to_original_ids(ids, per_crop, expanded_labels) == (original, labels)


def test_a_run_that_is_not_whole_crops_is_refused():
    with pytest.raises(ValueError, match="run of 5 visual tokens"):
        to_original_ids([-301, *[IMAGE_ATOM_ID] * 5, -305], 4)
    with pytest.raises(ValueError, match="run of 3 visual tokens"):
        to_original_ids([-301, *[IMAGE_ATOM_ID] * 3], 4)  # ends inside a crop
    with pytest.raises(ValueError, match="3 ids but 2 labels"):
        from_original_ids([1, 2, 3], 4, [1, 2])


def test_processor_ids_hold_one_placeholder_per_visual_token():
    from PIL import Image

    from ovis_lit.processing.image import ImagePreprocessor
    from ovis_lit.processing.processor import OvisProcessor
    from ovis_lit.processing.tokenizer import byte_level_tokenizer

    processor = OvisProcessor(byte_level_tokenizer("qwen"), "qwen", ImagePreprocessor(side=42), tokens_per_crop=4)
    sample = processor.query("What is it?", [Image.new("RGB", (84, 42), "red")], max_partition=4)
    assert sample.input_ids.count(IMAGE_ATOM_ID) == 4 * sample.n_crops
    assert sample.labels[:] == [IGNORE_ID] * len(sample.input_ids)  # a query supervises nothing
    original, _ = to_original_ids(sample.input_ids, 4)
    assert original.count(IMAGE_ATOM_ID) == sample.n_crops
