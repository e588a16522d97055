"""The greedy loop (`model/greedy_loop.py`) makes `generate`'s tokens in every stopping case, and hands every call it
does not cover to `generate`."""

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from ovis_lit.model import greedy_loop
from ovis_lit.model.build import build_ovis

from .test_generation_speed import _left_padded, _prompts
from .tiny import tiny_spec

GREEDY = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)


@pytest.fixture(scope="module", params=["qwen2", "gemma2"], ids=["ovis2-qwen2", "ovis1.6-gemma2"])
def model(request):
    """A tiny Ovis whose text vocabulary is whole blocks of `first_argmax` (384 = 3 x 128), so the loop's argmax is
    the block one; a sharper head, or random tiny LLMs repeat one token whatever the prompt."""
    spec = tiny_spec(llm=request.param, backbone="aimv2_vision_model")
    spec["llm"]["config"]["vocab_size"] = 384
    torch.manual_seed(0)
    model = build_ovis(spec).eval()
    with torch.no_grad():
        model.llm.get_output_embeddings().weight.mul_(4)
    return model


def _both(model, prompts, **kwargs):
    """(the loop's tokens, `generate`'s) for the same call, every other speed-up on in both."""
    args = _left_padded(prompts)
    got = model.generate(*args, **kwargs)
    model.greedy_loop = False
    try:
        want = model.generate(*args, **kwargs)
    finally:
        model.greedy_loop = True
    return got, want


def test_the_loop_makes_generates_tokens_in_every_stopping_case(model, monkeypatch):
    calls, loop = [], greedy_loop.greedy_tokens
    monkeypatch.setattr(greedy_loop, "greedy_tokens", lambda *a, **k: calls.append(1) or loop(*a, **k))
    prompts = _prompts(model)
    got, free = _both(model, prompts, **GREEDY, eos_token_id=None)
    assert len(calls) == 1 and torch.equal(got, free) and free.shape == (len(prompts), 8)
    assert len(set(free.flatten().tolist())) >= 6  # the answers differ: the comparison means something
    # an EOS that some prompts reach early, others not: pad ids after it, the batch runs on
    eos = free[0, 2].item()
    ends = [(row == eos).nonzero()[0].item() if (row == eos).any() else None for row in free]
    assert any(e is None for e in ends) and any(e is not None and e < 7 for e in ends)
    got, want = _both(model, prompts, **GREEDY, eos_token_id=eos)
    assert torch.equal(got, want) and (want == 0).any()
    # two EOS ids, one of them every prompt's first token: every sequence ends at once, one token each
    got, want = _both(model, prompts, **GREEDY, eos_token_id=[eos, *free[:, 0].tolist()])
    assert torch.equal(got, want) and want.shape == (len(prompts), 1)
    # min_new_tokens keeps EOS away for its first tokens
    got, want = _both(model, prompts, **GREEDY, min_new_tokens=4, eos_token_id=free[:, 0].tolist())
    assert torch.equal(got, want) and want.shape[1] > 1
    # one prompt alone: no padding, so no packed prefill; the loop's own prefill
    got, want = _both(model, prompts[3:4], **GREEDY, eos_token_id=eos)
    assert torch.equal(got, want)
    assert len(calls) == 5


@pytest.mark.parametrize("setting", [
    dict(do_sample=True), dict(num_beams=2), dict(repetition_penalty=1.2), dict(no_repeat_ngram_size=2),
    dict(suppress_tokens=[5]), dict(stop_strings=["x"]), dict(output_scores=True, return_dict_in_generate=True),
    dict(min_length=3), dict(max_time=10.0), dict(streamer=object()), dict(cache=object()),
    dict(max_new_tokens=None, max_length=30), dict(use_cache=False), dict(cache_implementation="static"),
])
def test_every_other_call_is_left_to_generate(setting):
    llm = type("LLM", (), {"generation_config": GenerationConfig()})()
    assert greedy_loop.plan(llm, {**GREEDY, **setting}) is None


def test_the_plan_reads_the_models_generation_config_then_the_call():
    llm = type("LLM", (), {"generation_config": GenerationConfig(eos_token_id=7, pad_token_id=1, max_new_tokens=5)})()
    assert greedy_loop.plan(llm, {}) == greedy_loop.GreedyPlan(5, 0, (7,), 1)
    assert greedy_loop.plan(llm, dict(eos_token_id=[3, 4], min_new_tokens=2, temperature=0.7)) == \
        greedy_loop.GreedyPlan(5, 2, (3, 4), 1)  # temperature: read only when sampling
    assert greedy_loop.plan(llm, dict(eos_token_id=None)) == greedy_loop.GreedyPlan(5, 0, (), 1)
    assert greedy_loop.plan(llm, dict(pad_token_id=None)) is None  # generate would pick the pad itself
    llm.generation_config.repetition_penalty = 1.05  # as some released chat models ship it
    assert greedy_loop.plan(llm, {}) is None


def test_a_streamer_takes_generate_with_the_same_tokens(model):
    prompts = _prompts(model)[:1]
    streamed = []

    class Collect(BaseStreamer):
        def put(self, value):
            streamed.append(value.flatten().tolist())

        def end(self):
            streamed.append("end")

    got = model.generate(*_left_padded(prompts), **GREEDY, eos_token_id=None, streamer=Collect())
    assert torch.equal(got, model.generate(*_left_padded(prompts), **GREEDY, eos_token_id=None))
    assert streamed[-1] == "end" and [t for ids in streamed[:-1] for t in ids] == got[0].tolist()


@pytest.mark.parametrize("width", [384, 128, 300, 1])
def test_first_argmax_is_torch_argmax(width):
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(16, width, generator=g)
    ties = torch.randint(0, 3, (16, width), generator=g).float()  # many equal maxima: the first one wins
    special = torch.randn(6, width, generator=g)
    special[0] = -float("inf")
    special[1, -1] = float("nan")
    special[2, 0] = special[2, -1] = float("nan")  # the first NaN wins, as in argmax
    special[3] = 0.0
    special[4, width // 2:] = float("inf")
    for scores in (rand, ties, special, rand.to(torch.bfloat16)):
        assert torch.equal(greedy_loop.first_argmax(scores), scores.argmax(-1))


def test_batched_answers_go_through_the_loop_with_generates_answers(reference, monkeypatch):
    """`generate_answers` (what `chat.py --batch` and `evals/run.py` call) decodes greedily through the loop, with the
    answers `generate` gives (the Ovis 1.6 fixture checkpoint: Gemma 2, EOS ids and a pad id)."""
    from PIL import Image

    from ovis_lit.evaluation.generation import generate_answers

    from .conftest import FIXTURE

    model, processor = reference
    images = {name: Image.open(FIXTURE / "images" / name) for name in ("wide.png", "square.png")}
    queries = [("<image>\nDescribe the image.", [images["wide.png"]]),
               ("What color is the circle?\n<image>", [images["square.png"]]), ("Is there a cat?", [])]
    calls, loop = [], greedy_loop.greedy_tokens
    monkeypatch.setattr(greedy_loop, "greedy_tokens", lambda *a, **k: calls.append(1) or loop(*a, **k))
    answers = generate_answers(model, processor, queries, batch_size=3, max_new_tokens=12, progress=False)
    assert calls == [1] and len(answers) == 3
    model.greedy_loop = False
    try:
        assert generate_answers(model, processor, queries, batch_size=3, max_new_tokens=12, progress=False) == answers
    finally:
        model.greedy_loop = True
    assert calls == [1]
