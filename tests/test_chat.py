"""chat.py: local images only (URLs and bad images refused with a message, not a traceback), multi-turn history in
the model's chat format, streamed text, thinking on/off on the tiny Ovis2.5, and batch mode equal to evals/run.py's
generation for the same prompts and images."""

import io
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from PIL import Image
from transformers import AutoTokenizer

from ovis_lit.chat.images import open_local_image
from ovis_lit.chat.repl import chat_loop
from ovis_lit.chat.session import ChatSession, Decoding
from ovis_lit.chat.streaming import ANSWER, THINKING, ChatStreamer
from ovis_lit.evaluation.generation import generate_answers
from ovis_lit.evaluation.loading import load_for_eval
from ovis_lit.rejection import Rejected

from .conftest import FIXTURE, REPO
from .test_ovis25 import FIXTURE25


@pytest.fixture(scope="module")
def gemma16():
    """The Ovis 1.6 reference fixture (a tiny random Gemma2 Ovis whose answers vary with the prompt)."""
    model, processor, _ = load_for_eval(FIXTURE / "checkpoint")
    return model, processor


@pytest.fixture(scope="module")
def tiny25():
    model, processor, _ = load_for_eval(FIXTURE25 / "checkpoint")
    return model, processor


@pytest.fixture
def pictures(tmp_path):
    """red.png, blue.png, a file that is not an image, and the folder they are in."""
    Image.new("RGB", (40, 24), (200, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (24, 40), (30, 30, 200)).save(tmp_path / "blue.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path


def _recording_prompts(monkeypatch, processor) -> list:
    """The prompt text and the number of images of every sample the processor builds."""
    seen, build = [], processor.conversation

    def conversation(turns, images=None, *args, **kwargs):
        sample = build(turns, images, *args, **kwargs)
        seen.append((sample.prompt, len(images or [])))
        return sample

    monkeypatch.setattr(processor, "conversation", conversation)
    return seen


# ------------------------------------------------------------------------------------------------------ images
def test_images_are_local_files_through_the_guarded_decoder(pictures, tmp_path):
    for url in ("https://example.com/cat.png", "http://x/y.jpg", "s3://bucket/a.png", "data:image/png;base64,AAAA"):
        with pytest.raises(Rejected, match="offline") as refused:
            open_local_image(url)
        assert refused.value.reason == "url_refused"
    with pytest.raises(Rejected) as refused:
        open_local_image(pictures / "bad.png")
    assert refused.value.reason == "decode_error"
    with pytest.raises(Rejected) as refused:
        open_local_image(pictures / "absent.png")
    assert refused.value.reason == "missing_image"
    with pytest.raises(Rejected) as refused:
        open_local_image(pictures)  # a folder
    assert refused.value.reason == "not_a_file"
    assert open_local_image("red.png", base=pictures).size == (40, 24)  # relative to the batch file's folder
    (tmp_path / "link.png").symlink_to(pictures / "blue.png")
    assert open_local_image(tmp_path / "link.png").size == (24, 40)  # a person's own link is followed


def test_the_loop_explains_what_it_refuses(gemma16, pictures, monkeypatch):
    """URLs, bad images, unknown commands and thinking on a model without it are explained; nothing is generated and
    nothing joins the history."""
    model, processor = gemma16
    session = ChatSession(model, processor, Decoding(max_new_tokens=4))
    monkeypatch.setattr(session, "ask", lambda *a, **k: pytest.fail("nothing should be asked"))
    out = io.StringIO()
    chat_loop(session, iter(["/image https://example.com/cat.png", f"/image {pictures / 'bad.png'}",
                             f"/image {pictures / 'absent.png'}", "/image", "/frobnicate", "/think on", "/think maybe",
                             "/quit", "never read"]), out)
    text = out.getvalue()
    assert "image refused: url_refused: https://example.com/cat.png: images are read from local files only" in text
    assert "image refused: decode_error: not an image format PIL reads" in text
    assert "image refused: missing_image" in text and "usage: /image PATH" in text
    assert "unknown command /frobnicate" in text and "thinking needs an Ovis2.5 checkpoint" in text
    assert "usage: /think on|off" in text and "Traceback" not in text
    assert session.turns == [] and session.images == []


# ------------------------------------------------------------------------------------------------- multi-turn
def test_multi_turn_history_in_the_models_chat_format(gemma16, pictures, monkeypatch):
    """Through the loop: each turn's prompt is the whole conversation in the Gemma format, with each image marked in
    the turn it was attached to; the streamed text is the answer; /reset forgets it all."""
    model, processor = gemma16
    prompts = _recording_prompts(monkeypatch, processor)
    session = ChatSession(model, processor, Decoding(max_new_tokens=5))
    answers, streamed, ask = [], [], session.ask

    def recorded_ask(text, images=(), on_text=None):
        pieces = []
        answers.append(ask(text, images, on_text=lambda piece, part: (pieces.append(piece), on_text(piece, part))))
        streamed.append("".join(pieces))
        return answers[-1]

    monkeypatch.setattr(session, "ask", recorded_ask)
    out = io.StringIO()
    chat_loop(session, iter([f"/image {pictures / 'red.png'}", "What colour is it?", "And its shape?",
                             f"/image {pictures / 'blue.png'}", "And this one?", "/reset", "Hello"]), out)
    assert len(prompts) == 4
    (p1, n1), (p2, n2), (p3, n3), (p4, n4) = prompts
    assert (n1, n2, n3, n4) == (1, 1, 2, 0)
    user, model_turn, end = "<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>\n"
    assert p1 == f"<bos>{user}<image>\nWhat colour is it?{end}{model_turn}"
    a1, a2, a3, a4 = answers
    assert [s.strip() for s in streamed] == answers  # the streamed text is the answer...
    assert all(f"model> {s}" in out.getvalue() for s in streamed)  # ... and it went to the terminal
    assert p2 == f"{p1}{a1}{end}{user}And its shape?{end}{model_turn}"
    assert p3 == f"{p2}{a2}{end}{user}<image>\nAnd this one?{end}{model_turn}"
    assert p4 == f"<bos>{user}Hello{end}{model_turn}"  # after /reset
    assert session.turns == [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": a4}]
    assert len({a1, a2, a3}) > 1  # the answers depend on the conversation: the comparison means something
    # the streamed text is what generate_answers answers for that conversation and those images
    red, blue = Image.open(pictures / "red.png").convert("RGB"), Image.open(pictures / "blue.png").convert("RGB")
    turns = [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": a1},
             {"from": "human", "value": "And its shape?"}, {"from": "gpt", "value": a2},
             {"from": "human", "value": "<image>\nAnd this one?"}]
    assert generate_answers(model, processor, [(turns, [red, blue])], max_new_tokens=5, progress=False) == [a3]


def test_a_message_the_model_cannot_take_leaves_the_history_alone(gemma16, pictures):
    model, processor = gemma16
    session = ChatSession(model, processor, Decoding(max_new_tokens=3))
    out = io.StringIO()
    chat_loop(session, iter(["<image> <image> two marks, no image"]), out)
    assert "cannot send this message: the message has 2 <image> marks but 0 images are attached" in out.getvalue()
    assert session.turns == [] and "Traceback" not in out.getvalue()


# -------------------------------------------------------------------------------------------------- streaming
def test_the_streamer_hands_over_text_as_tokens_come():
    """Fed one token at a time (as generate does), the callback gets the text in several pieces, split at </think>
    into thinking and answer, each piece before the stream ends."""
    tok = AutoTokenizer.from_pretrained(FIXTURE25 / "checkpoint")
    ids = tok("<think>\nThe shape is round and red.\n</think>\n\nIt is a red circle, I think.",
              add_special_tokens=False)["input_ids"]
    pieces, ended = [], []
    streamer = ChatStreamer(tok, lambda text, part: pieces.append((text, part, bool(ended))), thinking=True)
    streamer.put(torch.zeros(1, 0, dtype=torch.long))  # generate's first put: the prompt (empty with embeddings)
    for token in ids:
        streamer.put(torch.tensor([token]))
    ended.append(True)
    streamer.end()
    before_end = [p for p in pieces if not p[2]]
    assert len(before_end) >= 6  # word by word, not all at the end
    assert "".join(t for t, part, _ in pieces if part == THINKING).strip() == "The shape is round and red."
    assert "".join(t for t, part, _ in pieces if part == ANSWER).strip() == "It is a red circle, I think."
    with pytest.raises(ValueError, match="one answer"):
        streamer.put(torch.zeros(2, 1, dtype=torch.long))


def _streamed(session, text, images=()):
    pieces = []
    answer = session.ask(text, images, on_text=lambda piece, part: pieces.append((piece, part)))
    return answer, "".join(p for p, part in pieces if part == THINKING), "".join(p for p, part in pieces if part == ANSWER)


@pytest.mark.slow
def test_thinking_on_and_off_on_the_tiny_ovis25(tiny25, pictures, monkeypatch):
    """Off: the prompt carries the empty thinking block; on: the assistant turn is open for thinking, the thinking
    streams (with a budget, concluded by the original's sentence) before the answer, and only the answer stays in the
    history. Streaming never changes an answer."""
    from ovis_lit.evaluation.thinking import BUDGET_EXHAUSTED_TEXT

    model, processor = tiny25
    prompts = _recording_prompts(monkeypatch, processor)
    red = open_local_image(pictures / "red.png")
    extra = len(processor.tokenizer(BUDGET_EXHAUSTED_TEXT, add_special_tokens=False)["input_ids"])
    session = ChatSession(model, processor, Decoding(max_new_tokens=4))
    off, thinking_off, streamed_off = _streamed(session, "What colour is it?", [red])
    assert prompts[-1][0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert thinking_off == "" and streamed_off.strip() == off

    session.decoding.max_new_tokens, session.decoding.thinking_budget = 3 + extra + 2, 3
    session.set_thinking(True)
    on, thinking_on, streamed_on = _streamed(session, "Why?")
    user, assistant = "<|im_start|>user\n", "<|im_start|>assistant\n"
    assert prompts[-1][0] == (f"{user}<image>\nWhat colour is it?<|im_end|>\n{assistant}<think>\n\n</think>\n\n{off}"
                              f"<|im_end|>\n{user}Why?<|im_end|>\n{assistant}")
    assert "Considering the limited time" in thinking_on  # the budget ran out: the thinking was concluded
    assert streamed_on.strip() == on
    assert session.turns[-1] == {"from": "gpt", "value": on}  # the answer alone, not the thinking
    plain = generate_answers(model, processor, [(session.turns[:-1], [red])], max_new_tokens=3 + extra + 2,
                             progress=False, thinking=True, thinking_budget=3)
    assert plain == [on]
    session.set_thinking(False)
    assert session.decoding.options()["thinking_budget"] is None  # the budget applies only while thinking is on


def test_sampling_is_seeded_and_greedy_is_the_default(gemma16, pictures):
    """temperature > 0 samples (the same answers under the same seed, others than greedy's); 0 is greedy."""
    model, processor = gemma16
    red = open_local_image(pictures / "red.png")
    greedy = ChatSession(model, processor, Decoding(max_new_tokens=6)).ask("Describe it.", [red])
    sampled = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        sampled.append(ChatSession(model, processor, Decoding(max_new_tokens=6, temperature=5.0)).ask("Describe it.",
                                                                                                       [red]))
    assert sampled[0] == sampled[1] and len({greedy, sampled[0], sampled[2]}) == 3
    assert greedy == generate_answers(model, processor, [("Describe it.", [red])], max_new_tokens=6, progress=False)[0]


def test_decoding_settings_are_checked(gemma16):
    _, processor = gemma16
    with pytest.raises(ValueError, match="Ovis2.5"):
        Decoding(thinking=True).check(processor)
    with pytest.raises(ValueError, match="thinking is off"):
        Decoding(thinking_budget=4).check(processor)
    with pytest.raises(ValueError, match="temperature"):
        Decoding(temperature=-1).check(processor)
    assert Decoding().sampling() is None  # greedy by default
    assert Decoding(temperature=0.7, top_k=5).sampling() == {"do_sample": True, "temperature": 0.7, "top_p": 1.0,
                                                              "top_k": 5}


# ------------------------------------------------------------------------------------------------------ batch
def _compose(config: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config, overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


@pytest.mark.slow
def test_batch_mode_equals_evals_run_generation(tmp_path, capsys):
    """The same prompts and images through evals/run.py and through `chat.py batch=...` (greedy, batch 8):
    the same answers, one output line per input line in order, and each unusable line recorded, not fatal."""
    import base64

    from ovis_lit.chat.entry import chat
    from ovis_lit.evaluation.benchmarks import build_benchmark
    from ovis_lit.evaluation.entry import evaluate

    from .test_eval_fixtures import COLOURS, png_b64, write_tsv
    from .test_eval_run import SIZES

    rows = [{"index": k, "question": f"What colour is shape {k}?", "hint": "", **dict(zip("ABCD", COLOURS[k:k + 4])),
             "answer": "A", "category": "colour", "image": png_b64(COLOURS[k], size)}
            for k, size in enumerate(SIZES[:7])]
    tsv = write_tsv(tmp_path / "MMBench_DEV_EN.tsv", rows)
    evaluate(_compose("eval", [f"checkpoint={FIXTURE / 'checkpoint'}", "benchmark=[mmbench]",
                               f"benchmarks.mmbench.path={tsv}", "benchmarks.mmbench.max_new_tokens=6",
                               f"output_dir={tmp_path / 'eval'}", "progress=false", "device=cpu"]))
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions" / "mmbench.jsonl").open()]

    items = build_benchmark("mmbench", path=tsv).load()
    lines = []
    for item in items:
        (tmp_path / f"{item.key}.png").write_bytes(base64.b64decode(item.images[0]))
        lines.append(json.dumps({"id": item.key, "question": item.prompt, "images": [f"{item.key}.png"]}))
    bad = {2: "not json", 4: "[1, 2]", 5: json.dumps({"question": "x", "images": ["https://a.b/c.png"]}),
           6: json.dumps({"id": "m", "question": "y", "image": "absent.png"}), 8: json.dumps({"id": 9}), 9: ""}
    for at in sorted(bad):
        lines.insert(at, bad[at])
    source = tmp_path / "questions.jsonl"
    source.write_text("\n".join(lines) + "\n")

    output = tmp_path / "answers.jsonl"  # 13 lines: two batches of the default 8
    counts = chat(_compose("chat", [f"checkpoint={FIXTURE / 'checkpoint'}", f"batch={source}", "max_new_tokens=6",
                                    f"output={output}", "progress=false", "device=cpu"]))
    assert counts["answered"] == len(items) and counts["errors"] == len(bad)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, len(lines) + 1))
    answered = [r for r in records if "answer" in r]
    assert [r["id"] for r in answered] == [p["key"] for p in predictions]
    assert [r["answer"] for r in answered] == [p["answer"] for p in predictions]
    assert len({p["answer"] for p in predictions}) > 1  # the answers depend on the prompt
    errors = {r["line"]: r["error"] for r in records if "error" in r}
    assert sorted(errors) == [at + 1 for at in sorted(bad)]
    assert errors[3].startswith("bad_json") and "JSON object" in errors[5]
    assert errors[6].startswith("url_refused") and errors[7].startswith("missing_image")
    assert errors[9].startswith("no_question") and errors[10] == "bad_json: an empty line"
    assert records[6]["id"] == "m" and records[8]["id"] == 9
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["answered"] == len(items)


def test_batch_mode_refuses_a_missing_file_before_loading(tmp_path):
    from ovis_lit.chat.entry import chat

    with pytest.raises(FileNotFoundError, match="does not exist"):
        chat(_compose("chat", ["checkpoint=/nowhere", f"batch={tmp_path / 'absent.jsonl'}"]))


def test_dash_dash_batch_is_the_batch_override():
    import importlib.util

    spec = importlib.util.spec_from_file_location("chat_script", REPO / "chat.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.hydra_arguments(["checkpoint=x", "--batch", "q.jsonl", "batch_size=4"]) == [
        "checkpoint=x", "batch=q.jsonl", "batch_size=4"]
    assert script.hydra_arguments(["--batch=q.jsonl"]) == ["batch=q.jsonl"]


# ---------------------------------------------------------------------------------------------- web history
def test_the_web_demos_history_becomes_the_same_turns(pictures):
    """Gradio's ChatInterface history (as it hands it over) -> the turns and images chat.py would have: thinking
    messages and a message whose answer failed are left out."""
    from ovis_lit.chat.web_history import conversation_from_history, message_files

    red = str(pictures / "red.png")
    history = [
        {"role": "user", "metadata": None, "content": [
            {"file": {"path": red, "mime_type": "image/png"}, "alt_text": None, "type": "file"},
            {"text": "What colour is it?", "type": "text"}]},
        {"role": "assistant", "metadata": {"title": "Thinking"}, "content": [{"text": "hm, red", "type": "text"}]},
        {"role": "assistant", "metadata": None, "content": [{"text": "Red.", "type": "text"}]},
        {"role": "user", "metadata": None, "content": [{"text": "failed", "type": "text"}]},
        {"role": "user", "metadata": None, "content": [{"text": "And its shape?", "type": "text"}]},
        {"role": "assistant", "metadata": None, "content": "A box."},
    ]
    turns, images = conversation_from_history(history)
    assert turns == [{"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."},
                     {"from": "human", "value": "And its shape?"}, {"from": "gpt", "value": "A box."}]
    assert [i.size for i in images] == [(40, 24)]
    assert message_files({"text": "x", "files": [red, {"path": red}]}) == [red, red]
    with pytest.raises(Rejected, match="decode_error"):
        conversation_from_history([{"role": "user", "content": [{"path": str(pictures / "bad.png")}]},
                                   {"role": "assistant", "content": "?"}])


class _RecordingStreamer:
    def __init__(self):
        self.tokens, self.ends, self.after_end = [], 0, 0

    def put(self, value):
        self.after_end += bool(self.ends)
        self.tokens += value.reshape(-1).tolist()

    def end(self):
        self.ends += 1


class _ScriptedModel:
    """generate as transformers' does it for a streamer: the prompt ids first, then each new token, then end();
    the new tokens come from a script (one list per call)."""

    def __init__(self, *script):
        self.script = list(script)

    def generate(self, input_ids, attention_mask, pixel_values, grid_thws, max_new_tokens, streamer=None, **_):
        new = self.script.pop(0)[:max_new_tokens]
        if streamer is not None:
            streamer.put(input_ids)
            for token in new:
                streamer.put(torch.tensor([token]))
            streamer.end()
        return torch.tensor([new])


@pytest.mark.parametrize("script,max_new", [
    ([[5, 6, 7], [8, 9, 2]], 20),  # the budget runs out in the thinking: concluded, then continued
    ([[5, 2]], 20),  # EOS in phase 1: nothing more
    ([[5, 6, 7]], 4),  # the budget and the concluding sentence fill max_new_tokens: no phase 2
])
def test_a_thinking_budget_streams_its_phases_as_one(script, max_new):
    """What the streamer is handed is exactly the tokens returned (phase 1, the concluding sentence, phase 2; never
    phase 2's prompt), and the stream ends once, at the end."""
    from ovis_lit.evaluation.thinking import generate_with_thinking_budget

    tok = AutoTokenizer.from_pretrained(FIXTURE25 / "checkpoint")
    prompt = torch.tensor([[11, 12, 13]])
    streamer = _RecordingStreamer()
    rows = generate_with_thinking_budget(_ScriptedModel(*script), tok, prompt, torch.ones_like(prompt), None, None, 3,
                                         max_new, [2], 0, budget_exhausted_text="</think>\n\n", streamer=streamer)
    assert streamer.tokens == [11, 12, 13] + rows[0]  # the caller's streamer skips the prompt itself
    assert streamer.ends == 1 and streamer.after_end == 0


def test_thinking_that_never_ends_is_kept_as_the_answer(tiny25):
    """Within 3 new tokens the random model never writes </think>: as split_thinking says, all of it is the answer;
    the terminal says so after the streamed thinking, and the web demo's last message shows it as the answer."""
    from ovis_lit.chat.web_history import stream_answer

    model, processor = tiny25
    session = ChatSession(model, processor, Decoding(max_new_tokens=3))
    out = io.StringIO()
    chat_loop(session, iter(["/think on", "Hi"]), out)
    answer = session.turns[-1]["value"]
    assert answer and "[thinking]" in out.getvalue()
    assert "the thinking did not end within max_new_tokens: all of it is kept as the answer" in out.getvalue()
    session.reset()
    *_, last = stream_answer(session, "Hi", [])
    assert last == ("", answer)
