"""The lean decode step (`model/lean_decode.py`) and the KV cache with room (`model/kv_room.py`): generation's
scores are bitwise those of transformers' own decoder forward and `DynamicCache`, for every decoder the step
supports (Qwen2, Qwen3, Llama), left-padded or not; anything else keeps transformers' forward."""

import pytest
import torch
import transformers
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ovis_lit.model import kv_room, lean_decode, packed_attention, packed_prefill

from .tiny import LLMS

QWEN3 = dict(LLMS["qwen2"], model_type="qwen3", head_dim=8)
CONFIGS = {"qwen2": LLMS["qwen2"], "qwen3": QWEN3, "llama": LLMS["llama"]}


def _llm(config: dict, attn: str = "sdpa", **extra):
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(**{**config, **extra})
    cfg._attn_implementation = attn
    llm = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # a sharper head: random tiny LLMs otherwise repeat one token whatever the prompt
        llm.get_output_embeddings().weight.mul_(4)
    return llm


def _batch(lengths=(5, 9, 2, 7)):
    g = torch.Generator().manual_seed(1)
    longest = max(lengths)
    ids = torch.zeros(len(lengths), longest, dtype=torch.long)
    mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, longest - n:] = torch.randint(3, 290, (n,), generator=g)
        mask[i, longest - n:] = 1
    return ids, mask


def _scores(llm, ids, mask, lean: bool, new: int = 6, **kwargs):
    args = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0,
                output_scores=True, return_dict_in_generate=True, **kwargs)
    with torch.no_grad():
        if not lean:
            return llm.generate(input_ids=ids, attention_mask=mask, **args)
        with lean_decode.lean_decode_steps(llm):
            return llm.generate(input_ids=ids, attention_mask=mask, **args)


def _count_steps(monkeypatch):
    calls = []
    step = lean_decode.decode_step
    monkeypatch.setattr(lean_decode, "decode_step", lambda *a: calls.append(a[1].shape) or step(*a))
    return calls


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("lengths", [(5, 9, 2, 7), (6, 6)], ids=["left-padded", "unpadded"])
def test_lean_steps_give_the_decoders_scores_bitwise(name, lengths, monkeypatch):
    llm = _llm(CONFIGS[name])
    assert lean_decode.applies(llm)
    ids, mask = _batch(lengths)
    want = _scores(llm, ids, mask, lean=False)
    calls = _count_steps(monkeypatch)
    got = _scores(llm, ids, mask, lean=True)
    assert len(calls) == 5 and all(shape == (len(lengths), 1, llm.config.hidden_size) for shape in calls)
    assert torch.equal(got.sequences, want.sequences)
    assert all(torch.equal(a, b) for a, b in zip(got.scores, want.scores))
    # the answers depend on the prompt: the comparison means something
    assert len({tuple(row) for row in want.sequences[:, ids.shape[1]:].tolist()}) == len(lengths)
    assert "forward" not in vars(llm.get_decoder())  # the class's forward again


def test_lean_steps_with_packed_sdpa_and_a_cache_with_room(monkeypatch):
    """Ovis's setting: packed sdpa, the prompts' cache from `packed_prefill` (with room), then lean steps."""
    llm = _llm(CONFIGS["qwen2"])
    ids, mask = _batch()
    want = _scores(llm, ids, mask, lean=False)
    assert packed_attention.enable(llm)
    embeds = llm.get_input_embeddings()(ids)
    calls = _count_steps(monkeypatch)
    for room in (0, 2, 6):  # 2: the buffers grow during generation
        cache = packed_prefill.prefill_cache(llm, embeds, mask, room=room)
        assert all(isinstance(layer, kv_room.RoomyLayer) == (room > 0) for layer in cache.layers)
        with torch.no_grad(), lean_decode.lean_decode_steps(llm):
            got = llm.generate(inputs_embeds=embeds, attention_mask=mask, cache=cache, max_new_tokens=6,
                               min_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0,
                               output_scores=True, return_dict_in_generate=True)
        assert torch.equal(got.sequences, want.sequences[:, ids.shape[1]:])
        torch.testing.assert_close(torch.stack(got.scores), torch.stack(want.scores), rtol=1e-5, atol=1e-5)
    assert len(calls) == 3 * 6  # every step, the prompts' last column included


def test_other_calls_take_the_full_forward():
    """Prefills, calls asking for hidden states, and calls without a cache go to transformers' forward."""
    llm = _llm(CONFIGS["qwen2"])
    ids, mask = _batch()
    with torch.no_grad():
        plain = llm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        with lean_decode.lean_decode_steps(llm):
            inside = llm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            cache = DynamicCache(config=llm.config)
            llm(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True)
            one = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
            step = llm(input_ids=ids[:, -1:], attention_mask=one, cache=cache, use_cache=True,
                       output_hidden_states=True)
    assert torch.equal(inside.logits, plain.logits) and len(inside.hidden_states) == len(plain.hidden_states)
    assert step.hidden_states is not None  # the full forward answered the step that asked for hidden states


def test_where_the_lean_step_does_not_apply():
    assert not lean_decode.applies(_llm(LLMS["gemma2"], attn="eager"))  # soft-capping, sliding windows
    assert not lean_decode.applies(_llm(CONFIGS["qwen2"], attn="eager"))  # eager takes an additive float mask
    sliding = _llm(QWEN3, layer_types=["sliding_attention", "full_attention"], sliding_window=4)
    assert not lean_decode.applies(sliding)


def test_roomy_layer_holds_what_a_dynamic_layer_holds():
    g = torch.Generator().manual_seed(0)

    def kv(n, batch=3):
        return torch.randn(batch, 2, n, 4, generator=g), torch.randn(batch, 2, n, 4, generator=g)

    first = kv(5)
    roomy, dynamic = kv_room.RoomyLayer.with_room(*first, room=2), DynamicLayer()
    dynamic.update(*first)
    capacities = []
    for n in (1, 1, 1, 3):  # the third step overflows the room: the buffers double
        new = kv(n)
        got, want = roomy.update(*new), dynamic.update(*new)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        capacities.append(roomy._buffers[0].shape[-2])
    assert capacities == [7, 7, 14, 14] and roomy.get_seq_length() == dynamic.get_seq_length() == 11
    for layer in (roomy, dynamic):  # transformers' own cache edits still hold
        layer.crop(-2)
        layer.batch_select_indices(torch.tensor([2, 0]))
    new = kv(1, batch=2)
    got, want = roomy.update(*new), dynamic.update(*new)
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and roomy.get_seq_length() == 10
    for layer in (roomy, dynamic):  # and after a reset, the layer starts again
        layer.reset()
    new = kv(3, batch=2)
    got, want = roomy.update(*new), dynamic.update(*new)
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and roomy.get_seq_length() == 3
