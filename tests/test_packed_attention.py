"""Packed sdpa: attention within each sample of a packed row, equal to sdpa with a block-diagonal mask."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ovis_lit.model import packed_attention
from ovis_lit.model.packing import pack_rows

from .tiny import tiny_model


def _block_diagonal_mask(lengths, causal=True, window=None):
    """What transformers' sdpa mask allows for a packed row: same sample, causal, inside the sliding window."""
    sample = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    pos = torch.cat([torch.arange(n) for n in lengths])
    distance = pos[:, None] - pos[None, :]
    mask = sample[:, None] == sample[None, :]
    if causal:
        mask &= distance >= 0
    if window is not None:
        mask &= (distance < window) if causal else (distance.abs() < window)
    return mask


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 3])
def test_packed_sdpa_equals_sdpa_with_a_block_diagonal_mask(causal, window):
    torch.manual_seed(0)
    lengths = [5, 0, 7, 1, 4]
    total, heads, kv_heads, dim = sum(lengths), 4, 2, 8
    q = torch.randn(1, heads, total, dim, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, kv_heads, total, dim, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, kv_heads, total, dim, dtype=torch.float64, requires_grad=True)
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=causal, training=True)
    segments = packed_attention.segment_kwargs(lengths)

    out, weights = packed_attention.packed_sdpa_attention(module, q, k, v, None, scaling=0.3, sliding_window=window,
                                                          **segments)
    assert weights is None and out.shape == (1, total, heads, dim)
    mask = _block_diagonal_mask(lengths, causal, window)
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), attn_mask=mask, scale=0.3
    ).transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-12)

    probe = torch.randn_like(out)
    grads = torch.autograd.grad((out * probe).sum(), (q, k, v))
    expected_grads = torch.autograd.grad((expected * probe).sum(), (q, k, v))
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-12)


def test_without_boundaries_it_is_transformers_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    mask[1, ..., :2] = False  # left padding
    module = SimpleNamespace(num_key_value_groups=1, is_causal=True, training=False)
    out, _ = packed_attention.packed_sdpa_attention(module, q, k, v, mask, scaling=0.5)
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.5)
    assert torch.equal(out, expected)


def test_packed_sdpa_refuses_soft_capping():
    q = torch.randn(1, 1, 3, 4)
    module = SimpleNamespace(num_key_value_groups=1, is_causal=True)
    with pytest.raises(ValueError, match="soft-cap"):
        packed_attention.packed_sdpa_attention(module, q, q, q, None, softcap=50.0,
                                               **packed_attention.segment_kwargs([3]))


def test_sdpa_llms_switch_to_packed_sdpa_and_eager_ones_do_not():
    assert packed_attention.is_enabled(tiny_model(llm="qwen2").llm)
    assert packed_attention.is_enabled(tiny_model(llm="llama").llm)
    assert not packed_attention.is_enabled(tiny_model(llm="gemma2").llm)  # eager: soft-capping


def test_training_batch_runs_the_llm_on_one_unpadded_row(monkeypatch):
    model = tiny_model(llm="qwen2").train()
    seen = {}
    decoder = model.llm.get_decoder()
    original = decoder.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", spy)
    input_ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0], [11, 12, 13, 0]])
    mask = (input_ids != 0).long()
    model(input_ids, mask, input_ids.masked_fill(mask == 0, -100))
    assert seen["inputs_embeds"].shape[:2] == (1, 9)
    assert seen["cu_seq_lens_q"].tolist() == [0, 4, 6, 9]
    assert seen["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 0, 1, 2]]


def test_pack_rows_one_row_keeps_batch_order_without_padding():
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    embeds = torch.arange(9.0).reshape(3, 3, 1)
    packed, positions, targets = pack_rows(embeds, mask, torch.arange(9).reshape(3, 3), one_row=True)
    assert packed[..., 0].tolist() == [[0.0, 1.0, 6.0, 7.0, 8.0]]
    assert positions.tolist() == [[0, 1, 0, 1, 2]]
    assert targets.tolist() == [[0, 1, 6, 7, 8]]


def test_export_reports_sdpa(tmp_path):
    from ovis_lit.interop.original import load_original
    from ovis_lit.interop.original_export import export_original
    from ovis_lit.processing.image import ImagePreprocessor
    from ovis_lit.processing.processor import OvisProcessor
    from ovis_lit.processing.tokenizer import byte_level_tokenizer

    model = tiny_model(llm="qwen2")
    out = export_original(model, OvisProcessor(byte_level_tokenizer("qwen"), "qwen", ImagePreprocessor(side=42),
                                               tokens_per_crop=4), tmp_path)
    assert json.loads((out / "config.json").read_text())["llm_attn_implementation"] == "sdpa"
    again, _ = load_original(out)
    assert packed_attention.is_enabled(again.llm)
