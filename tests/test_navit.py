"""The Ovis2.5 NaViT ViT against the reference fixture's visual tokens, and its packed-attention invariants."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ovis_lit.model.navit import Segments, Siglip2NavitConfig, Siglip2NavitModel
from ovis_lit.model.visual_tokenizer import VisualTokenizer

from .conftest import REPO

FIXTURE25 = REPO / "tests" / "fixtures" / "ovis25-reference-tiny"
VIT_PREFIX = "visual_tokenizer.vit.vision_model."


def _vit_and_head(attn: str = "eager") -> VisualTokenizer:
    config = json.loads((FIXTURE25 / "checkpoint" / "config.json").read_text())
    weights = load_file(FIXTURE25 / "checkpoint" / "model.safetensors")
    fields = {k: v for k, v in config["vit_config"].items() if k != "model_type" and not k.startswith("_")}
    vit_cfg = Siglip2NavitConfig(**fields)
    vit_cfg._attn_implementation = attn
    vit = Siglip2NavitModel(vit_cfg)
    vit.load_state_dict({k[len(VIT_PREFIX):]: v for k, v in weights.items() if k.startswith(VIT_PREFIX)}, strict=True)
    vt = VisualTokenizer(vit, vocab_size=config["visual_vocab_size"], n_indicators=4, hidden_stride=2)
    head = {k[len("visual_tokenizer.head."):]: v for k, v in weights.items() if k.startswith("visual_tokenizer.head.")}
    vt.head.load_state_dict(head, strict=True)
    return vt.eval()


@pytest.fixture(scope="module")
def tensors25():
    return load_file(FIXTURE25 / "expected.safetensors")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_visual_tokens_match_reference(tensors25, attn):
    vt = _vit_and_head(attn)
    with torch.no_grad():
        tokens = vt(tensors25["forward.sample0.pixel_values"], torch.tensor([[1, 4, 18]]))
    ref = tensors25["forward.sample0.visual_tokens"]
    assert tokens.shape == (18, 1, 100)
    assert (tokens[:, 0] - ref).abs().max().item() <= 1e-6


def test_images_in_a_packed_batch_do_not_see_each_other(tensors25):
    """Each image's features are the same alone and packed with others, in any order (no cross-image attention,
    no padding effects)."""
    vit = _vit_and_head("sdpa").backbone
    pixel_values, grids = tensors25["forward.batch.pixel_values"], tensors25["forward.batch.grid_thws"]
    sizes = (grids[:, 0] * grids[:, 1] * grids[:, 2]).tolist()
    with torch.no_grad():
        packed = vit(pixel_values, grids).split(sizes)
        alone = [vit(p, g[None]) for p, g in zip(pixel_values.split(sizes), grids)]
        order = list(reversed(range(len(sizes))))
        reversed_pack = vit(torch.cat([pixel_values.split(sizes)[i] for i in order]), grids[order]).split(
            [sizes[i] for i in order])
    for i in range(len(sizes)):
        assert (packed[i] - alone[i]).abs().max().item() <= 1e-5
        assert (reversed_pack[order.index(i)] - alone[i]).abs().max().item() <= 1e-5


def test_conv2d_patch_embedding_is_the_same_map():
    """num_patches -1 builds a Conv2d patch embedding: with the Linear's weights reshaped, the same features."""
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
                  image_size=64, window_size=32, fullatt_block_indexes="1")
    linear = Siglip2NavitModel(Siglip2NavitConfig(num_patches=64, **common)).eval()
    conv = Siglip2NavitModel(Siglip2NavitConfig(num_patches=-1, **common)).eval()
    assert isinstance(conv.embeddings.patch_embedding, torch.nn.Conv2d)
    state = linear.state_dict()
    state["embeddings.patch_embedding.weight"] = state["embeddings.patch_embedding.weight"].reshape(32, 3, 8, 8)
    conv.load_state_dict(state)
    pixel_values, grids = torch.randn(4 * 6 * 8, 192), torch.tensor([[1, 6, 8], [3, 4, 8]])[:1].repeat(4, 1)
    with torch.no_grad():
        assert torch.allclose(linear(pixel_values, grids), conv(pixel_values, grids), atol=1e-5)


def test_segments_group_equal_lengths_without_padding():
    seg = Segments(torch.tensor([0, 4, 8, 10, 14]))
    assert seg.max_length == 4
    assert [g.tolist() for g in seg.groups] == [[[8, 9]], [[0, 1, 2, 3], [4, 5, 6, 7], [10, 11, 12, 13]]]


def test_bad_grids_are_refused():
    vit = _vit_and_head().backbone
    with pytest.raises(ValueError, match="patches"):
        vit(torch.zeros(10, 192), torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="multiples of hidden_stride"):
        vit(torch.zeros(12, 192), torch.tensor([[1, 3, 4]]))


def test_flash_attention_path_passes_the_packed_boundaries(tensors25, monkeypatch):
    """With flash_attention_2 the layers call the varlen kernel once over the whole pack with cu_seqlens (here a
    stand-in that attends within each sequence, as flash-attn's varlen does): same features as eager."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    calls = []

    def varlen(module, q, k, v, mask, cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, scaling=None,
               is_causal=None, dropout=0.0, **kwargs):
        assert q.shape[0] == 1 and torch.equal(cu_seq_lens_q, cu_seq_lens_k) and not is_causal
        bounds = cu_seq_lens_q.tolist()
        calls.append(len(bounds) - 1)
        parts = [torch.nn.functional.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], scale=scaling)
                 for a, b in zip(bounds[:-1], bounds[1:])]
        assert max_length_q == max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
        return torch.cat(parts, dim=2).transpose(1, 2), None

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._global_mapping, "flash_attention_2", varlen)
    vit = _vit_and_head("eager").backbone
    pixel_values, grids = tensors25["forward.batch.pixel_values"], tensors25["forward.batch.grid_thws"]
    with torch.no_grad():
        eager = vit(pixel_values, grids)
        vit.config._attn_implementation = "flash_attention_2"
        flash = vit(pixel_values, grids)
    assert len(calls) == 2 and calls[1] == int(grids[:, 0].sum())  # layer 1: one sequence per frame
    assert calls[0] > calls[1]  # layer 0: windows
    assert (flash - eager).abs().max().item() <= 1e-5
