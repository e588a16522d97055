"""Generation's speed-ups (packed prefill, MKL-packed decode weights) leave every greedy answer as it was: with the
switches on and off, alone and in any batch composition, for Ovis 1.6 (Gemma2), Ovis2 (Qwen2 + AIMv2) and Ovis2.5
(Qwen3 + NaViT, against the original's tokens in the fixture)."""

import pytest
import torch

from ovis_lit.constants import IMAGE_ATOM_ID, INDICATOR_IDS
from ovis_lit.model import lean_decode, packed_prefill, packed_weights

from .test_ovis25 import FIXTURE25, _sample, expected25  # noqa: F401  (module fixture)
from .tiny import tiny_model

GREEDY = dict(do_sample=False, eos_token_id=None, pad_token_id=0)


def _tiny(llm, backbone):
    torch.manual_seed(0)
    model = tiny_model(llm=llm, backbone=backbone).eval()
    with torch.no_grad():  # a sharper head: random tiny LLMs otherwise repeat one token whatever the prompt
        model.llm.get_output_embeddings().weight.mul_(4)
    return model


def _prompts(model, crops=(2, 0, 1, 3, 1)):
    """One (ids, pixel_values) per prompt: text, then `n` crops as one image's placeholders (none for 0), then text,
    each prompt a different length."""
    g = torch.Generator().manual_seed(1)
    side = model.visual_tokenizer.backbone.config.image_size
    per_crop = model.visual_tokenizer.tokens_per_crop()
    prompts = []
    for k, n in enumerate(crops):
        text = torch.randint(10, 290, (3 + 2 * k,), generator=g).tolist()
        image = [INDICATOR_IDS[0]] + [IMAGE_ATOM_ID] * (per_crop * n) + [INDICATOR_IDS[-1]] if n else []
        prompts.append((text[:2] + image + text[2:], torch.randn(n, 3, side, side, generator=g)))
    return prompts


def _left_padded(prompts):
    longest = max(len(ids) for ids, _ in prompts)
    input_ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long)
    for i, (ids, _) in enumerate(prompts):
        input_ids[i, longest - len(ids):] = torch.tensor(ids)
        mask[i, longest - len(ids):] = 1
    return input_ids, mask, torch.cat([p for _, p in prompts])


def _generate(model, prompts, on, new=8):
    with model.generation_speedups(on):
        return model.generate(*_left_padded(prompts), max_new_tokens=new, **GREEDY)


@pytest.fixture(scope="module", params=[("gemma2", "siglip_vision_model"), ("qwen2", "aimv2_vision_model")],
                ids=["ovis1.6-gemma2", "ovis2-qwen2"])
def model(request):
    return _tiny(*request.param)


def test_answers_equal_with_speedups_on_and_off_in_any_batch(model):
    prompts = _prompts(model)
    plain = _generate(model, prompts, on=False)  # transformers' generate on the padded batch: the answers before
    # the answers depend on the prompt: the comparison means something
    assert len({tuple(row) for row in plain.tolist()}) == len(prompts) and len(set(plain.flatten().tolist())) >= 6
    assert torch.equal(_generate(model, prompts, on=True), plain)
    for i in (1, 3):  # alone (no padding at all): the shortest and the longest prompt
        assert torch.equal(_generate(model, [prompts[i]], on=True)[0], plain[i])
    order = [3, 0, 4, 2, 1]  # another batch composition: other padding for every prompt
    assert torch.equal(_generate(model, [prompts[i] for i in order], on=True), plain[order])


def test_the_speedups_run_where_they_apply(model, monkeypatch):
    """Packed prefill and lean decode steps on an sdpa LLM with full-attention layers (Qwen2), not on Gemma2
    (eager, sliding layers); packed weights on CPU float32 LLMs with MKL."""
    calls = {"prefill": 0, "weights": 0, "lean": 0}
    prefill, linears, lean = packed_prefill.prefill_cache, packed_weights.packed_linears, lean_decode.lean_decode_steps

    def count(name, f):
        def wrapped(*a, **k):
            calls[name] += 1
            return f(*a, **k)
        return wrapped

    monkeypatch.setattr(packed_prefill, "prefill_cache", count("prefill", prefill))
    monkeypatch.setattr(packed_weights, "packed_linears", count("weights", linears))
    monkeypatch.setattr(lean_decode, "lean_decode_steps", count("lean", lean))
    prompts = _prompts(model)
    _generate(model, prompts, on=True, new=2)
    qwen2 = int(model.llm.config.model_type == "qwen2")
    assert calls == {"prefill": qwen2, "weights": int(torch.backends.mkl.is_available()), "lean": qwen2}
    _generate(model, prompts, on=False, new=2)
    assert calls["prefill"] <= 1 and calls["weights"] <= 1 and calls["lean"] <= 1


def test_packed_prefill_cache_is_the_padded_prefills():
    model = _tiny("qwen2", "aimv2_vision_model")
    input_ids, mask, pixels = _left_padded(_prompts(model))
    embeds = model.merge(input_ids, mask, None, pixels).inputs_embeds
    assert packed_prefill.applies(model.llm, mask)
    packed = packed_prefill.prefill_cache(model.llm, embeds, mask)
    with torch.no_grad():
        positions = (mask[:, :-1].cumsum(1) - 1).clamp(min=0)  # generate's numbering: 0 at each first real token
        padded = model.llm(inputs_embeds=embeds[:, :-1], attention_mask=mask[:, :-1], position_ids=positions,
                           use_cache=True).past_key_values
    real = mask[:, :-1].bool()
    for ours, theirs in zip(packed.layers, padded.layers):
        for a, b in ((ours.keys, theirs.keys), (ours.values, theirs.values)):
            assert a.shape == b.shape
            torch.testing.assert_close(a.transpose(1, 2)[real], b.transpose(1, 2)[real], rtol=1e-5, atol=1e-5)
            assert not a.transpose(1, 2)[~real].any()  # padding slots: zeros, hidden by the mask


def test_packed_prefill_computes_of_the_last_layer_its_keys_and_values_alone(monkeypatch):
    """Where the lean step applies, the prefill skips the last layer's attention and MLP (nothing reads them): the
    cache is bitwise the whole decoder's, with room or without."""
    model = _tiny("qwen2", "aimv2_vision_model")
    input_ids, mask, pixels = _left_padded(_prompts(model))
    embeds = model.merge(input_ids, mask, None, pixels).inputs_embeds
    mlp_calls = []
    model.llm.get_decoder().layers[-1].mlp.register_forward_hook(lambda *a: mlp_calls.append(1))
    with monkeypatch.context() as m:
        m.setattr(lean_decode, "applies", lambda llm: False)
        whole = packed_prefill.prefill_cache(model.llm, embeds, mask)
    assert mlp_calls == [1]
    for room in (0, 4):
        trimmed = packed_prefill.prefill_cache(model.llm, embeds, mask, room=room)
        assert mlp_calls == [1]  # the last layer's MLP did not run
        for a, b in zip(trimmed.layers, whole.layers):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="MKL's packed sgemm only")
def test_packed_linears_only_at_their_row_count_and_restored():
    torch.manual_seed(0)
    llm = torch.nn.Sequential(torch.nn.Linear(16, 40), torch.nn.Linear(40, 8, bias=False))
    x8, x5 = torch.randn(8, 1, 16), torch.randn(5, 16)
    with torch.no_grad():
        want8, want5 = llm(x8), llm(x5)
        assert packed_weights.applies(llm)
        with packed_weights.packed_linears(llm, rows=8):
            got8, got5 = llm(x8), llm(x5)
    torch.testing.assert_close(got8, want8, rtol=1e-5, atol=1e-5)
    assert torch.equal(got5, want5)  # other row counts: the plain Linear, bit for bit
    assert all("forward" not in vars(m) for m in llm)  # the class's forward again
    assert not packed_weights.applies(llm.to(torch.float64))


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="MKL's packed sgemm only")
def test_packed_weights_kept_between_calls_only_while_the_weights_are_unchanged(monkeypatch):
    torch.manual_seed(0)
    llm = torch.nn.Sequential(torch.nn.Linear(16, 40), torch.nn.Linear(40, 8, bias=False)).eval()
    x8 = torch.randn(8, 16)
    packs = []
    reorder = torch.ops.mkl._mkl_reorder_linear_weight
    monkeypatch.setattr(packed_weights, "_reorder", lambda w, rows: packs.append(rows) or reorder(w, rows),
                        )

    def packed_output(rows=8):
        with torch.no_grad(), packed_weights.packed_linears(llm, rows=rows):
            return llm(x8)

    first = packed_output()
    assert packs == [8, 8]
    assert torch.equal(packed_output(), first) and packs == [8, 8]  # kept: not packed again
    with torch.no_grad():
        llm[1].weight.mul_(2)  # an in-place change (an optimizer step, load_state_dict): that layer is packed again
        want = llm(x8)
    got = packed_output()
    assert packs == [8, 8, 8]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, first)
    llm[0].weight = torch.nn.Parameter(torch.randn(40, 16))  # a new tensor: packed again
    packed_output()
    assert packs == [8, 8, 8, 8]
    packed_output(rows=5)  # another row count: both packed for it
    assert packs[4:] == [5, 5]
    packed_weights.release(llm)
    assert not any(packed_weights._PACKED in vars(m) for m in llm)
    assert all(name.startswith(("0.", "1.")) and name.endswith(("weight", "bias")) for name in llm.state_dict())
    packed_output()
    assert packs[6:] == [8, 8]


def test_ovis25_answers_equal_the_originals_with_speedups_on_and_off(expected25):  # noqa: F811
    from ovis_lit.interop.ovis25 import load_ovis25

    model, processor = load_ovis25(FIXTURE25 / "checkpoint", vit_attn_implementation="eager")
    model.eval()
    cases = {k: v for k, v in expected25["generate"].items() if "conversations" in v}
    spec = expected25["generate"]["batched_left_padded"]
    samples = [_sample(processor, cases[name], generation_preface="") for name in spec["samples"]]
    batch = processor.collate(samples, padding_side="left")
    assert not batch["attention_mask"].bool().all() and packed_prefill.applies(model.llm, batch["attention_mask"])
    args = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["grid_thws"])
    for on in (True, False):
        with model.generation_speedups(on):
            assert model.generate(*args, max_new_tokens=10, **GREEDY).tolist() == spec["new_token_ids"], on
