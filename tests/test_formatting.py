"""Conversation formats: prompt strings, ids and assistant-only labels."""

import pytest
from PIL import Image

from ovis_lit.constants import IGNORE_ID, IMAGE_TOKEN_ID
from ovis_lit.processing.conversation import ConversationFormatter
from ovis_lit.processing.image import ImagePreprocessor
from ovis_lit.processing.placeholders import to_original_ids
from ovis_lit.processing.processor import OvisProcessor
from ovis_lit.processing.tokenizer import byte_level_tokenizer

from .conftest import FIXTURE

CONV = [
    {"from": "human", "value": "<image>\nWhat is it?"},
    {"from": "gpt", "value": "A cat."},
    {"from": "human", "value": "And the colour?"},
    {"from": "gpt", "value": "Black and white."},
]


def test_fixture_conversations(reference, expected):
    _, processor = reference
    cases = expected["format_and_forward"]
    assert len(cases) == 4
    for case in cases:
        images = [Image.open(FIXTURE / p) for p in case["images"]]
        sample = processor.conversation(case["conversations"], images, case["max_partition"])
        assert sample.prompt == case["prompt"]
        # the fixture records the original's layout (one -300 per crop), ours has one per visual token
        assert to_original_ids(sample.input_ids, processor.tokens_per_crop, sample.labels) == (
            case["input_ids"], case["labels"])


def test_default_max_partition_single_vs_several_images(reference, expected):
    """Without an explicit max_partition: 9 for one image, 1 for each of several (the original's training rule)."""
    _, processor = reference
    for case in expected["format_and_forward"]:
        images = [Image.open(FIXTURE / p) for p in case["images"]]
        ids = processor.conversation(case["conversations"], images).input_ids
        assert to_original_ids(ids, processor.tokens_per_crop)[0] == case["input_ids"]


def _supervised_text(tok, result):
    return tok.decode([t for t in result.labels if t != IGNORE_ID])


def test_qwen_format_with_real_vocabulary(qwen_tok):
    f = ConversationFormatter(qwen_tok, "qwen")
    r = f.format(CONV)
    assert r.prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\nAnd the colour?<|im_end|>\n"
        "<|im_start|>assistant\nBlack and white.<|im_end|>\n"
    )
    assert r.input_ids.count(IMAGE_TOKEN_ID) == 1
    # Whole-prompt tokenisation (image mark aside) equals the per-turn concatenation: no merge crosses a turn.
    before, after = r.prompt.split("<image>")
    whole = qwen_tok(before, add_special_tokens=False).input_ids + [IMAGE_TOKEN_ID] + qwen_tok(after, add_special_tokens=False).input_ids
    assert r.input_ids == whole
    assert _supervised_text(qwen_tok, r) == "A cat.<|im_end|>Black and white.<|im_end|>"
    im_end = qwen_tok.convert_tokens_to_ids("<|im_end|>")
    # the newline after each assistant <|im_end|> is not supervised
    ends = [i for i, t in enumerate(r.input_ids) if t == im_end]
    assert all(r.labels[i + 1] == IGNORE_ID for i in ends)
    assert sum(1 for i in ends if r.labels[i] == im_end) == 2


def test_qwen_keeps_given_system_prompt_and_message_whitespace(qwen_tok):
    f = ConversationFormatter(qwen_tok, "qwen")
    r = f.format([{"from": "system", "value": "Be brief."}, {"from": "human", "value": " hi "}, {"from": "gpt", "value": "ok"}])
    assert r.prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n hi <|im_end|>")


def test_llama3_format():
    tok = byte_level_tokenizer("llama3")
    r = ConversationFormatter(tok, "llama3").format(CONV[:2])
    assert r.prompt == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "You are a helpful and honest multimodal assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is it?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA cat.<|eot_id|>"
    )
    assert r.input_ids[0] == tok.convert_tokens_to_ids("<|begin_of_text|>") and r.labels[0] == IGNORE_ID
    assert _supervised_text(tok, r) == "A cat.<|eot_id|>"
    assert r.labels[-1] == tok.convert_tokens_to_ids("<|eot_id|>")  # Llama 3 supervises its end token, last


def test_gemma_strips_messages_and_rejects_system():
    tok = byte_level_tokenizer("gemma")
    f = ConversationFormatter(tok, "gemma")
    r = f.format([{"from": "user", "value": "  hi \n"}, {"from": "assistant", "value": " yes "}])
    assert r.prompt == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nyes<end_of_turn>\n"
    assert _supervised_text(tok, r) == "yes<end_of_turn>"
    with pytest.raises(ValueError, match="no system turn"):
        f.format([{"from": "system", "value": "x"}, {"from": "human", "value": "hi"}])


def test_generation_prompt_has_no_labels():
    tok = byte_level_tokenizer("qwen")
    r = ConversationFormatter(tok, "qwen").format(CONV[:1], generation_preface="")
    assert r.prompt.endswith("<|im_start|>assistant\n")
    assert all(label == IGNORE_ID for label in r.labels)


def test_image_mark_never_merges_with_neighbours():
    tok = byte_level_tokenizer("qwen", corpus=["a<image>b " * 50, "xa bx " * 50], vocab_size=300)
    r = ConversationFormatter(tok, "qwen").format([{"from": "human", "value": "xa<image>bx"}, {"from": "gpt", "value": "ok"}])
    i = r.input_ids.index(IMAGE_TOKEN_ID)
    assert tok.decode(r.input_ids[i - 2 : i]).endswith("xa") and tok.decode(r.input_ids[i + 1 : i + 3]).startswith("bx")


def test_caption_sample_labels_only_the_caption():
    tok = byte_level_tokenizer("qwen")
    r = ConversationFormatter(tok, "qwen").format_caption(" A red square.<image> ", template="<image>\nDescription:\n")
    assert r.prompt == "<image>\nDescription:\nA red square."
    assert r.input_ids[0] == IMAGE_TOKEN_ID
    assert _supervised_text(tok, r) == "A red square."
    assert tok.eos_token_id not in r.input_ids and tok.convert_tokens_to_ids("<|im_start|>") not in r.input_ids


def test_image_count_mismatch_is_a_clear_error():
    processor = OvisProcessor(byte_level_tokenizer("qwen"), "qwen", ImagePreprocessor(side=42), tokens_per_crop=4)
    with pytest.raises(ValueError, match="2 <image> marks but 1 images"):
        processor.conversation([{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "x"}], [Image.new("RGB", (8, 8))])


def test_unknown_role_and_format_are_errors():
    tok = byte_level_tokenizer("qwen")
    with pytest.raises(ValueError, match="unknown chat format"):
        ConversationFormatter(tok, "vicuna")
    with pytest.raises(ValueError, match="unknown conversation role"):
        ConversationFormatter(tok, "qwen").format([{"from": "bot", "value": "x"}])
    with pytest.raises(ValueError, match="needs"):
        ConversationFormatter(byte_level_tokenizer("qwen"), "gemma")  # no <end_of_turn> in a ChatML vocabulary
