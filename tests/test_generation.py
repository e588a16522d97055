"""Batched generation: EOS per sample, sampling, only new tokens."""

import pytest
import torch
from PIL import Image

from .conftest import FIXTURE


def _batch(reference, expected):
    model, processor = reference
    samples = [
        processor.conversation(c["conversations"], [Image.open(FIXTURE / p) for p in c["images"]], generation_preface="")
        for c in expected["generate"].values()
    ]
    batch = processor.collate(samples, padding_side="left")
    return model, batch, [c["new_token_ids"] for c in expected["generate"].values()]


def test_eos_stops_each_sample_on_its_own(reference, expected):
    model, batch, want = _batch(reference, expected)
    eos = 110  # sample 0's second token; sample 1 never produces it in 12 steps
    assert eos in want[0] and eos not in want[1]
    new = model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=12,
                         do_sample=False, eos_token_id=eos, pad_token_id=0)
    stop = want[0].index(eos)
    assert new[0, : stop + 1].tolist() == want[0][: stop + 1]
    assert (new[0, stop + 1 :] == 0).all()  # padded after its EOS
    assert new[1].tolist() == want[1]  # the other sample runs on untouched


def test_sampling_is_seeded_and_returns_only_new_tokens(reference, expected):
    model, batch, _ = _batch(reference, expected)
    args = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
    torch.manual_seed(1)
    a = model.generate(*args, max_new_tokens=7, do_sample=True, temperature=1.0, top_k=0)
    torch.manual_seed(1)
    b = model.generate(*args, max_new_tokens=7, do_sample=True, temperature=1.0, top_k=0)
    assert a.shape == (2, 7) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() < model.llm.config.vocab_size


def test_text_only_prompt_generates(reference):
    model, processor = reference
    sample = processor.query("Is there a cat?")
    batch = processor.collate([sample])
    assert batch["pixel_values"].shape[0] == 0
    new = model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=3, do_sample=False)
    assert new.shape == (1, 3)


def test_a_right_padded_batch_is_refused(reference, expected):
    # the model does not re-pad: a prompt that does not end at the last column would generate after its padding
    model, processor = reference
    samples = [
        processor.conversation(c["conversations"], [Image.open(FIXTURE / p) for p in c["images"]],
                               generation_preface="")
        for c in expected["generate"].values()
    ]
    batch = processor.collate(samples)  # right-padded, the training layout
    assert not batch["attention_mask"][:, -1].all()
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=2)
