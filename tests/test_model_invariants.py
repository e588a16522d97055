"""Invariants of the visual tokenizer, the embedding table and the multimodal merge."""

import pytest
import torch

from ovis_lit.constants import IGNORE_ID, IMAGE_ATOM_ID, INDICATOR_IDS
from ovis_lit.model.embedding import VisualEmbedding
from ovis_lit.model import visual_tokenizer
from ovis_lit.model.visual_tokenizer import merge_patches, normed_softmax_, tokenize

from .tiny import tiny_model

S = 42  # crop side of the tiny backbones


def _batch(model, crops_per_sample=(2, 0, 1), text_len=6, pad_extra=(0, 3, 1), padding_side="right", per_crop=None):
    """Padded ids with one -300 per visual token (`per_crop`, the model's tokens per crop, for each crop),
    indicators around each crop, labels on the text tail."""
    per_crop = per_crop or model.visual_tokenizer.tokens_per_crop()
    rows, labels = [], []
    for n, extra in zip(crops_per_sample, pad_extra):
        ids = [5, 6]
        for _ in range(n):
            ids += [INDICATOR_IDS[0], *[IMAGE_ATOM_ID] * per_crop, INDICATOR_IDS[-1]]
        ids += list(range(10, 10 + text_len))
        rows.append(ids)
        labels.append([IGNORE_ID] * (len(ids) - 3) + ids[-3:])
    longest = max(len(r) for r in rows) + max(pad_extra)
    input_ids = torch.zeros(len(rows), longest, dtype=torch.long)
    label_t = torch.full_like(input_ids, IGNORE_ID)
    mask = torch.zeros_like(input_ids)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        span = slice(0, len(r)) if padding_side == "right" else slice(longest - len(r), longest)
        input_ids[i, span] = torch.tensor(r)
        label_t[i, span] = torch.tensor(lab)
        mask[i, span] = 1
    pixel_values = torch.randn(sum(crops_per_sample), 3, S, S)
    return input_ids, mask, label_t, pixel_values


# --------------------------------------------------------------------------------------------- visual tokenizer
@pytest.mark.parametrize("backbone", ["siglip_vision_model", "clip_vision_model", "aimv2_vision_model", "siglip2_vision_model"])
def test_backbones_give_distributions_over_the_visual_vocabulary(backbone):
    model = tiny_model(backbone=backbone)
    probs = model.visual_tokenizer(torch.randn(3, 3, S, S))
    # 42 px / 14 = 3x3 patches, padded to 4x4, merged 2x2 -> 4 tokens over V = 64 words
    assert probs.shape == (3, 4, 64)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 4), atol=1e-6)
    assert (probs >= 0).all()
    assert (probs[..., -5:] == 0).all()  # indicator words are never produced by images


@pytest.mark.parametrize("backbone", ["siglip_vision_model", "clip_vision_model", "aimv2_vision_model", "siglip2_vision_model"])
def test_encoder_layers_get_a_contiguous_residual_stream(backbone):
    # Conv patch embeddings are a transposed view; without the fix every Linear in the ViT copied its input.
    from ovis_lit.model.vision import encoder_layers

    model = tiny_model(backbone=backbone)
    seen = []
    for layer in encoder_layers(model.visual_tokenizer.backbone):
        layer.register_forward_pre_hook(lambda m, args, kwargs: seen.append(
            (args[0] if args else kwargs["hidden_states"]).is_contiguous()), with_kwargs=True)
    model.visual_tokenizer(torch.randn(3, 3, S, S))
    assert seen and all(seen)


@pytest.mark.parametrize("function", ["st_argmax", "st_softmax", "gumbel_argmax"])
def test_hard_tokenizers_are_one_hot_and_pass_gradients(function):
    logits = torch.randn(2, 4, 59, requires_grad=True)
    out = tokenize(logits, function, tau=0.5)
    assert torch.equal(out.detach().sum(-1), torch.ones(2, 4))
    assert ((out.detach() == 0) | (out.detach() == 1)).all()
    (out * torch.randn_like(out)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_st_argmax_passes_the_upstream_gradient_to_the_logits_unchanged():
    # The original's straight-through: one_hot(argmax) - logits.detach() + logits, on the raw logits.
    logits = torch.randn(2, 4, 59, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 4, 59, dtype=torch.float64)
    out = tokenize(logits, "st_argmax")
    (grad,) = torch.autograd.grad(out, logits, upstream)
    assert torch.equal(grad, upstream)
    hard = torch.nn.functional.one_hot(logits.argmax(-1), 59).double()
    assert torch.equal(out.detach(), hard - logits.detach() + logits.detach())  # the original's forward, bit for bit


def test_st_softmax_passes_the_softmax_gradient():
    logits = torch.randn(2, 4, 59, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 4, 59, dtype=torch.float64)
    (grad,) = torch.autograd.grad(tokenize(logits, "st_softmax"), logits, upstream)
    (want,) = torch.autograd.grad(torch.softmax(logits, -1), logits, upstream)
    assert torch.allclose(grad, want, rtol=0, atol=1e-12)
    assert not torch.allclose(grad, upstream)


def test_softmax_in_fp32_for_bf16_logits():
    logits = torch.randn(2, 65531).bfloat16() * 3
    probs = tokenize(logits, "softmax")
    assert probs.dtype == torch.bfloat16
    assert abs(probs.float().sum(-1) - 1).max() < 1e-2


def test_hidden_stride_pads_odd_grid_bottom_right_and_groups_row_major():
    d = 2
    grid = torch.arange(9 * d, dtype=torch.float32).reshape(1, 9, d) + 1  # 3x3 patches, all non-zero
    merged = merge_patches(grid, 2)
    assert merged.shape == (1, 4, 4 * d)
    patch = lambda r, c: grid[0, r * 3 + c]  # noqa: E731
    zero = torch.zeros(d)
    assert torch.equal(merged[0, 0], torch.cat([patch(0, 0), patch(0, 1), patch(1, 0), patch(1, 1)]))
    assert torch.equal(merged[0, 1], torch.cat([patch(0, 2), zero, patch(1, 2), zero]))
    assert torch.equal(merged[0, 2], torch.cat([patch(2, 0), patch(2, 1), zero, zero]))
    assert torch.equal(merged[0, 3], torch.cat([patch(2, 2), zero, zero, zero]))


# ------------------------------------------------------------------------------------------------ embedding table
def test_embedding_table_float_is_expectation_and_int_is_lookup():
    vte = VisualEmbedding(10, 3)
    probs = torch.softmax(torch.randn(4, 10), -1)
    assert torch.allclose(vte(probs), probs @ vte.weight, atol=1e-6)
    short = torch.softmax(torch.randn(4, 7), -1)  # indicator columns left out: same as zero-padded
    padded = torch.cat([short, torch.zeros(4, 3)], -1)
    assert torch.allclose(vte(short), vte(padded), atol=1e-6)
    assert torch.equal(vte(torch.tensor([9, 0])), vte.weight[[9, 0]])


def test_indicator_ids_take_the_last_rows_in_order():
    model = tiny_model()
    ids = torch.tensor([list(INDICATOR_IDS)])
    embeds = model.embed_text(ids)
    v = model.vte.num_embeddings
    assert torch.equal(embeds[0], model.vte.weight[v - 5 : v])  # -301 -> V-5 ... -305 -> V-1


def test_vte_reinit_from_text_table_statistics():
    model = tiny_model(vte_init="text_stats")
    text = model.llm.get_input_embeddings().weight
    assert abs(model.vte.weight.std().item() - text.std().item()) < 0.3 * text.std().item()


# ---------------------------------------------------------------------------------------------------------- merge
def _naive_merge(model, input_ids, pixel_values):
    """Position by position: the text embedding, or at the k-th -300 of the batch (row-major) the k-th visual
    token's embedding (crops in order, each crop's tokens in order). The definition the masked assignment must equal."""
    _, visual = model.embed_visual(pixel_values)
    visual = visual.reshape(-1, visual.shape[-1])
    text = model.embed_text(input_ids)
    out, k = text.clone(), 0
    for b in range(input_ids.shape[0]):
        for p in range(input_ids.shape[1]):
            if input_ids[b, p] == IMAGE_ATOM_ID:
                out[b, p] = visual[k]
                k += 1
    assert k == visual.shape[0]
    return out


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_merge_is_a_masked_assignment_of_the_visual_tokens(padding_side):
    model = tiny_model().eval()
    input_ids, mask, labels, pixel_values = _batch(model, padding_side=padding_side)
    with torch.no_grad():
        merged = model.merge(input_ids, mask, labels, pixel_values)
        want = _naive_merge(model, input_ids, pixel_values)
    assert merged.inputs_embeds.shape == (*input_ids.shape, want.shape[-1])  # no re-padding: the caller's layout
    assert torch.equal(merged.attention_mask, mask)
    assert torch.allclose(merged.inputs_embeds, want, atol=1e-6)
    assert torch.equal(merged.labels, labels.masked_fill(input_ids < 0, IGNORE_ID))


def test_merge_is_the_same_for_either_padding_side():
    model = tiny_model().eval()
    right, left = _batch(model), _batch(model, padding_side="left")
    with torch.no_grad():
        a = model.merge(*right)
        b = model.merge(*left[:3], right[3])  # the same crops
    for i in range(right[0].shape[0]):
        ra, rb = right[1][i].bool(), left[1][i].bool()
        assert torch.allclose(a.inputs_embeds[i, ra], b.inputs_embeds[i, rb], atol=1e-6)
        assert torch.equal(a.labels[i, ra], b.labels[i, rb])


def test_visual_positions_are_never_supervised():
    model = tiny_model().eval()
    input_ids, mask, labels, pixel_values = _batch(model)
    labels = torch.where(mask.bool(), input_ids, IGNORE_ID)  # try to supervise everything, placeholders included
    merged = model.merge(input_ids, mask, labels, pixel_values)
    real = merged.attention_mask.bool()
    assert ((merged.labels >= 0) | (merged.labels == IGNORE_ID)).all()  # no placeholder id survives as a label
    n_visual = pixel_values.shape[0] * (model.visual_tokenizer.tokens_per_crop() + 2)  # + 2 indicators per crop
    assert (merged.labels[real] == IGNORE_ID).sum() == n_visual


def test_crop_count_mismatch_is_an_error():
    model = tiny_model()
    input_ids, mask, labels, pixel_values = _batch(model)
    per_crop = model.visual_tokenizer.tokens_per_crop()
    with pytest.raises(ValueError, match=f"{3 * per_crop} image placeholders .* but {2 * per_crop} visual tokens"):
        model.merge(input_ids, mask, labels, pixel_values[:2])


@pytest.mark.parametrize("llm", ["qwen2", "gemma2", "llama"])
def test_sparse_training_loss_equals_full_llm_loss(llm):
    model = tiny_model(llm=llm).eval()
    input_ids, mask, labels, pixel_values = _batch(model)
    with torch.no_grad():
        full = model(input_ids, mask, labels, pixel_values, return_logits=True).loss
        sparse = model(input_ids, mask, labels, pixel_values).loss
    assert torch.allclose(full, sparse, atol=1e-5)


def test_gemma_visual_embeddings_take_the_text_embedding_scale():
    model = tiny_model(llm="gemma2").eval()
    _, scaled = model.embed_visual(torch.randn(1, 3, S, S))
    tokens = model.visual_tokenizer.tokens(torch.randn(1, 3, S, S))
    assert model._embed_scale(torch.float32) is not None
    assert torch.allclose(model._scaled(model.vte(tokens)), model.vte(tokens) * model.llm.config.hidden_size**0.5)
    assert scaled.shape[-1] == model.llm.config.hidden_size


# ------------------------------------------------------------------------------------------------------ gradients
def _visual_params(model):
    return {n: p for n, p in model.named_parameters() if n.startswith(("visual_tokenizer", "vte")) and p.requires_grad}


def test_text_only_batch_still_gives_every_visual_parameter_a_zero_gradient():
    model = tiny_model().train()
    from ovis_lit.model.vision import unused_parameter_names

    for name in unused_parameter_names(model.visual_tokenizer.backbone):
        model.visual_tokenizer.backbone.get_parameter(name).requires_grad_(False)
    input_ids, mask, labels, _ = _batch(model, crops_per_sample=(0, 0, 0))
    loss = model(input_ids, mask, labels, torch.zeros(0, 3, S, S)).loss
    loss.backward()
    params = _visual_params(model)
    assert params
    for name, p in params.items():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) == 0, name


def test_mixed_batch_gives_visual_gradients():
    model = tiny_model().train()
    input_ids, mask, labels, pixel_values = _batch(model)
    model(input_ids, mask, labels, pixel_values).loss.backward()
    assert model.visual_tokenizer.head[0].weight.grad.abs().sum() > 0
    assert model.vte.weight.grad.abs().sum() > 0


def test_all_masked_batch_gives_zero_loss_not_nan():
    model = tiny_model().train()
    input_ids, mask, labels, pixel_values = _batch(model)
    loss = model(input_ids, mask, torch.full_like(labels, IGNORE_ID), pixel_values).loss
    assert loss.item() == 0.0


def test_pack_rows_layout():
    from ovis_lit.model.packing import pack_rows

    # lengths 4, 2, 5, 1: rows of 6 hold them in 2 rows (12 positions) where rows of 5 need 3 (15)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    embeds = torch.arange(20.0).reshape(4, 5, 1)
    targets = torch.arange(20).reshape(4, 5)
    packed, positions, packed_targets = pack_rows(embeds, mask, targets)
    assert packed.shape == (2, 6, 1)  # 5+1 | 4+2
    assert positions.tolist() == [[0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 0, 1]]
    assert packed_targets.tolist() == [[10, 11, 12, 13, 14, 15], [0, 1, 2, 3, 5, 6]]
    assert packed[..., 0].tolist() == packed_targets.float().tolist()

    # lengths 5, 4, 4: longer rows do not help (3 x 5 < 2 x 8); tails restart positions and are ignored
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    packed, positions, packed_targets = pack_rows(torch.ones(3, 5, 2), mask, torch.arange(15).reshape(3, 5))
    assert packed.shape == (3, 5, 2)
    assert positions.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 0], [0, 1, 2, 3, 0]]
    assert packed_targets[:, 4].tolist() == [4, -100, -100]
    assert packed[1:, 4].abs().sum() == 0

    # left padding and an empty sample: lengths 3, 0, 2 share one row of 5
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]])
    packed, positions, packed_targets = pack_rows(torch.arange(12.0).reshape(3, 4, 1), mask, torch.arange(12).reshape(3, 4))
    assert positions.tolist() == [[0, 1, 2, 0, 1]]
    assert packed_targets.tolist() == [[1, 2, 3, 8, 9]]
    assert packed[..., 0].tolist() == [[1.0, 2.0, 3.0, 8.0, 9.0]]


@pytest.mark.parametrize("lengths", [
    [211, 194, 160, 126, 109, 92, 59, 59],  # benchmarks/model_step.py's batch
    [7, 7, 7, 7], [1], [3, 0, 2], [100] + [1] * 50, list(range(1, 65)),
])
def test_plan_rows_fits_every_sample_once_in_the_fewest_positions(lengths):
    from ovis_lit.model.packing import _first_fit_decreasing, plan_rows

    capacity, rows = plan_rows(lengths)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= capacity for row in rows)
    assert max(lengths) <= capacity <= 2 * max(lengths)
    # never worse than rows as long as the longest sample
    assert len(rows) * capacity <= len(_first_fit_decreasing(lengths, max(lengths))) * max(lengths)
    if lengths[0] == 211:
        assert len(rows) * capacity <= 1080  # 4 rows of 270 (rows of 211 need 6: 1266 positions for 1010 tokens)


@pytest.mark.parametrize("mode", [True, "full", "selective"])
def test_activation_checkpointing_keeps_loss_and_gradients(mode):
    def run(ac):
        torch.manual_seed(0)
        model = tiny_model().train()
        model.set_activation_checkpointing(vision=ac, llm=ac)
        torch.manual_seed(1)
        input_ids, mask, labels, pixel_values = _batch(model)
        loss = model(input_ids, mask, labels, pixel_values).loss
        loss.backward()
        return loss, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    (la, ga), (lb, gb) = run(mode), run(False)
    assert torch.allclose(la, lb) and ga.keys() == gb.keys()
    for name in ga:
        assert torch.allclose(ga[name], gb[name], atol=1e-6), name


def _matmuls_in_one_step(mode) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    count = 0

    class CountMatmuls(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal count
            count += func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = tiny_model().train()
    model.set_activation_checkpointing(vision=mode, llm=mode)
    batch = _batch(model)
    with CountMatmuls():
        model(*batch).loss.backward()
    return count


def test_selective_checkpointing_recomputes_no_matmul():
    plain, selective, full = (_matmuls_in_one_step(m) for m in ("none", "selective", "full"))
    assert selective == plain < full  # full re-runs every layer's matmuls; selective keeps their outputs


def test_unknown_checkpointing_mode_is_refused():
    with pytest.raises(ValueError, match="selective"):
        tiny_model().set_activation_checkpointing(vision="some")

def test_one_table_gradient_buffer_per_step():
    """Visual tokens and indicator ids read the table in one call: backward builds a single [V, d] gradient
    (two separate reads would zero-fill one each and add them), with the matmul's part written into it (no [w, d]
    intermediate to copy), and it equals the two-read gradient."""
    from torch.utils._python_dispatch import TorchDispatchMode

    views = {"split_with_sizes", "slice", "t", "detach", "view", "alias", "as_strided", "_unsafe_view", "transpose"}

    class CountTableSized(TorchDispatchMode):
        """New tensors the size of the table, and of its image rows (a matmul gradient not written in place)."""

        def __init__(self, shape, image_rows):
            super().__init__()
            self.shape, self.image_shape, self.count, self.image_sized = shape, (image_rows, shape[1]), 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.__name__.split(".")[0]
            # in-place and out= ops write into a buffer some earlier op allocated
            new = name not in views and not name.endswith("_") and func._overloadname != "out"
            if isinstance(out, torch.Tensor) and new:
                self.count += out.shape == self.shape
                self.image_sized += out.shape == self.image_shape
            return out

    torch.manual_seed(0)
    model = tiny_model(vocab=72).train()  # a table shape no other parameter has
    batch = _batch(model)
    loss = model(*batch).loss
    counter = CountTableSized(model.vte.weight.shape, model.vte.num_embeddings - model.n_indicators)
    with counter:
        loss.backward()
    assert counter.count == 1
    assert counter.image_sized == 0
    fused = model.vte.weight.grad.clone()

    # the same gradient from two separate reads of the table
    model.zero_grad()
    input_ids, mask, labels, pixel_values = batch
    tokens = model.visual_tokenizer.tokens(pixel_values).detach()
    rows = input_ids[(input_ids <= INDICATOR_IDS[0]) & (input_ids >= INDICATOR_IDS[-1])]
    rows = model.vte.num_embeddings - model.n_indicators + (INDICATOR_IDS[0] - rows)
    d = model.vte.embedding_dim
    g_visual, g_rows = torch.randn(*tokens.shape[:-1], d), torch.randn(len(rows), d)
    ((model.vte(tokens) * g_visual).sum() + (model.vte(rows) * g_rows).sum()).backward()
    separate = model.vte.weight.grad.clone()
    model.zero_grad()
    visual, indicator = model.vte(tokens, rows)
    ((visual * g_visual).sum() + (indicator * g_rows).sum()).backward()
    torch.testing.assert_close(model.vte.weight.grad, separate)
    assert fused.abs().sum() > 0


def test_table_read_passes_gradcheck():
    """probs @ table[:w] and the indicator rows, with the hand-written backward, against finite differences."""
    from ovis_lit.model.embedding import VisualEmbedding

    torch.manual_seed(0)
    vte = VisualEmbedding(10, 3, dtype=torch.double)
    probs = torch.softmax(torch.randn(2, 4, 7, dtype=torch.double), -1).requires_grad_()
    rows = torch.tensor([8, 9, 7, 9])  # indicator rows, one twice

    def read(probs, table):
        return torch.func.functional_call(vte, {"weight": table}, (probs, rows))

    assert torch.autograd.gradcheck(read, (probs, vte.weight.detach().clone().requires_grad_()))
    assert torch.autograd.gradcheck(lambda p, t: read(p, t)[0], (probs, vte.weight.detach().clone().requires_grad_()))


def test_softmax_table_read_passes_gradcheck():
    """Logits -> (softmax, its table embedding, indicator rows) with the in-place softmax backward, against finite
    differences; also when the probabilities themselves feed the loss, and when only some outputs do."""
    from ovis_lit.model.embedding import VisualEmbedding

    torch.manual_seed(0)
    vte = VisualEmbedding(10, 3, dtype=torch.double)
    logits = torch.randn(2, 4, 7, dtype=torch.double, requires_grad=True)
    table = vte.weight.detach().clone().requires_grad_()
    rows = torch.tensor([8, 9, 7, 9])

    def read(logits, table):
        return torch.func.functional_call(vte, {"weight": table}, (logits, rows), {"softmax": True})

    assert torch.autograd.gradcheck(read, (logits, table))
    assert torch.autograd.gradcheck(lambda x, t: read(x, t)[1], (logits, table))  # embeddings only
    assert torch.autograd.gradcheck(lambda x, t: read(x, t)[0], (logits, table))  # probabilities only
    assert torch.autograd.gradcheck(lambda x, t: read(x * 1, t), (logits, table))  # a non-leaf: overwritten
    scratch = logits.detach().clone()
    probs, expected, indicator = vte(scratch, rows, softmax=True)
    assert probs.data_ptr() == scratch.data_ptr()  # written over the logits, which nothing else read
    torch.testing.assert_close(probs, torch.softmax(logits.detach(), -1))
    torch.testing.assert_close(expected, probs @ vte.weight[:7])

    # float32, against autograd's composed ops: the same gradients
    vte32, probe = VisualEmbedding(10, 3), torch.randn(5, 3)
    x = torch.randn(5, 7, requires_grad=True)
    (fused,) = torch.autograd.grad((vte32(x * 1, softmax=True)[1] * probe).sum(), x)  # a non-leaf: overwritten
    (composed,) = torch.autograd.grad((vte32(torch.softmax(x, -1)) * probe).sum(), x)
    torch.testing.assert_close(fused, composed)
    # a view (what FSDP's hooks hand over) gets a new buffer instead
    (from_view,) = torch.autograd.grad((vte32((x * 1).view(5, 7), softmax=True)[1] * probe).sum(), x)
    torch.testing.assert_close(from_view, composed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_inference_head_in_row_blocks_gives_the_same_tokens_bit_for_bit(dtype, monkeypatch):
    """At inference the head's LayerNorm and the softmax run one block of rows at a time over the head's output
    (`normed_softmax_`): tokens and embeddings bitwise those of the whole-tensor path, whatever the block; with a
    gradient, a hook on the head (FSDP's unsharding) or another tokenize function the usual path runs."""
    torch.manual_seed(0)
    model = tiny_model(vocab=300).to(dtype).eval()
    tok, pixels = model.visual_tokenizer, torch.randn(3, 3, 42, 42, dtype=dtype)
    logits = tok.logits(pixels).detach()
    whole = tokenize(logits)
    assert not torch.equal(whole, torch.softmax(logits * 1.001, -1))  # the values are not all alike
    row = logits.shape[-1] * logits.element_size()
    for block_bytes in (1, 2 * row, 4 * row + 3, 1 << 20):  # one row, blocks that do and do not divide the 12 rows
        raw = tok.head[0](tok.features(pixels)).detach()
        out = normed_softmax_(raw, tok.head[1], block_bytes)
        assert out.data_ptr() == raw.data_ptr() and torch.equal(out, whole)
    blocks = []
    monkeypatch.setattr(visual_tokenizer, "normed_softmax_",
                        lambda *a, f=normed_softmax_: blocks.append(1) or f(*a))
    tokens, visual = model.embed_visual(pixels)  # with a gradient: the fused softmax and table read
    assert not blocks
    with torch.no_grad():
        got_tokens, got_visual = model.embed_visual(pixels)
    assert blocks == [1] and torch.equal(got_tokens, tokens.detach()) and torch.equal(got_visual, visual.detach())
    handle = tok.head.register_forward_hook(lambda *a: None)
    with torch.no_grad():
        assert torch.equal(model.embed_visual(pixels)[1], visual.detach()) and blocks == [1]
    handle.remove()
    tok.tokenize_function = "st_argmax"
    with torch.no_grad():
        model.embed_visual(pixels)
    assert blocks == [1]


def test_fused_softmax_table_read_is_only_for_full_precision():
    # In bfloat16 the softmax runs in float32 and its probabilities are rounded (`tokenize`): the fused read would
    # be another function, so the model composes tokenize and the table there, and the fused read refuses.
    from ovis_lit.model.embedding import VisualEmbedding

    vte = VisualEmbedding(10, 3, dtype=torch.bfloat16)
    logits = torch.randn(2, 4, 7, dtype=torch.bfloat16)
    assert not vte.fuses_softmax(logits)
    with pytest.raises(ValueError, match="float32/float64"):
        vte(logits, softmax=True)
    model = tiny_model(dtype="bfloat16")
    assert model.fast_path and not model._fuse_softmax(logits)
