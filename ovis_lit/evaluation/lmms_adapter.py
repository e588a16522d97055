"""lmms-eval's model interface over any checkpoint evals/run.py loads, so that any lmms-eval task runs with it:

    python -m lmms_eval --model ovis_lit --model_args checkpoint=<.ckpt or directory>,device=cuda,dtype=bfloat16 \\
        --tasks <task> --batch_size 8 --log_samples --output_path <dir>

(registered through the `lmms_eval.models` entry point, `lmms_plugin.py`). The checkpoint is loaded by
`loading.load_for_eval` and answers come from `generation.generate_answers`, as in evals/run.py: the same chat
format, left-padded batches (the batch size never changes an answer), greedy decoding, Ovis2.5 thinking and pixel
budgets. What lmms-eval hands over is read as evals/run.py reads its files: each image through the guarded decoder
(`processing.image_decoding`: pixel limit, full decode), a video path through `evaluation.video.open_video`.

What differs from lmms-eval's own HF models, and why:
- A request whose visuals are refused (undecodable, over the pixel limit, a video with images, audio) or whose
  images the processor refuses is answered with "" (scored as a wrong answer, as lmms-eval's models answer a failed
  request) and counted by reason in `skipped`, logged after each task; the run goes on.
- `loglikelihood` (and so `multiple_choice`) returns, as lmms-eval's own models do, the mean cross-entropy of the
  continuation (lower is likelier), one request at a time.
- Decoding is greedy only: a task asking for sampling (temperature > 0, do_sample) or beam search is refused before
  anything is generated, with how to override it (`--gen_kwargs temperature=0`).
- Stop strings (`until`) cut the answer at the first one after its surrounding whitespace is stripped
  (`generate_answers` strips); lmms-eval's HF models cut first, which differs only for an answer that starts with
  whitespace followed by a stop string.
- `<image>` / `<video>` marks in a task's prompt are kept when there is one per image (the images go there),
  otherwise removed, and the processor puts the images before the text, as evals/run.py's prompts have them.
- One process: data-parallel runs (`accelerate launch`) are refused at start; multi-round generation is not
  built (`generate_until_multi_round` says so).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm.auto import tqdm

from ..constants import IMAGE_TOKEN, VIDEO_TOKEN
from ..processing.image_decoding import decode_image, decode_opened
from ..processing.video import DEFAULT_FRAMES, VideoFrames, is_video_name
from ..rejection import Rejected
from .entry import resolve_device, thinking_settings
from .generation import generate_answers
from .loading import load_for_eval
from .suite import EVAL_REASONS
from .video import VideoSource, open_video

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128  # when a task's generation_kwargs do not say (lmms-eval's HF models' default)
GREEDY_KWARGS = frozenset({"temperature", "do_sample", "num_beams", "top_p", "top_k"})
KNOWN_KWARGS = GREEDY_KWARGS | {"max_new_tokens", "until"}
WARNINGS_PER_REASON = 10  # refused requests logged one by one up to this many per reason


class OvisLit(lmms):
    """`--model ovis_lit`. Model args (`--model_args k=v,...`): `checkpoint` (required: a train.py `.ckpt`, a
    sharded checkpoint, an ovis-lit export or an original Ovis directory), `processor` (a directory with the
    tokenizer, when the checkpoint has none beside it), `device` (auto: cuda when available), `dtype` (e.g.
    bfloat16; default the checkpoint's), `max_new_tokens` (when a task does not set it), `thinking` (Ovis2.5: think
    before answering; the answer is what follows </think>), `thinking_tokens` (new tokens allowed for the thinking
    on top of the task's max_new_tokens), `thinking_budget` (at most this many thinking tokens, then it is
    concluded), `min_pixels` / `max_pixels` (Ovis2.5: each image's pixel budget), `video_frames` (frames sampled
    uniformly from a video). `--batch_size N` batches requests (a number; "auto" is not supported)."""

    is_simple = True  # lmms-eval hands a prompt and doc_to_visual (not chat messages): our processor formats the chat

    def __init__(
        self,
        checkpoint: str,
        processor: str | None = None,
        device: str | None = "auto",
        dtype: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        thinking: bool = False,
        thinking_tokens: int = 2048,
        thinking_budget: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        video_frames: int = DEFAULT_FRAMES,
        max_batch_size: int | None = None,  # lmms-eval passes it for "auto" batch sizes, which are refused
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:  # a misspelt model arg must not be silently ignored
            raise TypeError(f"ovis_lit: unknown model args {sorted(unknown)}; see OvisLit's docstring for the known ones")
        if importlib.util.find_spec("filelock._api") is None:  # before the model is loaded, not after
            raise ImportError("lmms-eval 0.7.3's evaluator patches filelock._api, which filelock 4 removed: "
                              "pip install 'filelock<4'")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("ovis_lit runs in one process: data-parallel lmms-eval runs (accelerate launch, torchrun) "
                             "are not supported yet; run one process per GPU on separate tasks or --limit/--offset")
        try:
            self.batch_size = int(batch_size)
        except (TypeError, ValueError):
            raise ValueError(f"ovis_lit: batch_size must be a number, got {batch_size!r}") from None
        if self.batch_size < 1:
            raise ValueError(f"ovis_lit: batch_size must be at least 1, got {batch_size}")
        self.default_max_new_tokens = int(max_new_tokens)
        self.video_frames = int(video_frames)
        # the same checks as evals/run.py's thinking options, before the model is loaded
        self.thinking = thinking_settings({"thinking": thinking, "thinking_tokens": thinking_tokens,
                                           "thinking_budget": thinking_budget})
        self._device = resolve_device(device or "auto")
        self.model, self.processor, self.info = load_for_eval(checkpoint, processor, self._device, dtype)
        if self.thinking["thinking"] and self.processor.chat_format != "qwen3":
            raise ValueError(f"ovis_lit: thinking needs an Ovis2.5 checkpoint (qwen3 chat format); this one's is "
                             f"{self.processor.chat_format!r}")
        self.pixels = {k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
        if self.pixels and not hasattr(getattr(self.processor, "image_preprocessor", None), "min_pixels"):
            raise ValueError("ovis_lit: min_pixels / max_pixels need a native-resolution (Ovis2.5) checkpoint; this "
                             "one's processor cuts images into crops")
        self.skipped: Counter = Counter()  # reason -> requests answered "" because their input was refused
        log.info("ovis_lit: loaded %s (%s) on %s", self.info["checkpoint"], self.info["format"], self._device)

    @property
    def device(self) -> str:
        return self._device

    # ------------------------------------------------------------------------------------------------ generation
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """One answer per request, in request order. Requests are grouped by their generation kwargs (one task's
        share them) and batched longest prompt first (left padding: the order never changes an answer)."""
        collator = lmms_utils.Collator([request.args for request in requests], lambda args: -len(args[0]),
                                       grouping=True)
        answers: list[str] = []
        skipped_before = Counter(self.skipped)
        with tqdm(total=len(requests), disable=self.rank != 0, desc="ovis_lit responding") as bar:
            for chunk in collator.get_batched(n=self.batch_size):
                contexts, all_kwargs, to_visuals, doc_ids, tasks, splits = zip(*chunk)
                max_new_tokens, until = self.decoding(all_kwargs[0])
                queries, answered = [], []
                for i, (context, to_visual, doc_id, task, split) in enumerate(
                        zip(contexts, to_visuals, doc_ids, tasks, splits)):
                    try:
                        visuals = self.visual_inputs(to_visual, task, split, doc_id)
                        queries.append((self.prompt_text(context, visuals), visuals))
                        answered.append(i)
                    except Rejected as e:
                        self.refused(e, f"{task} doc {doc_id}")
                texts = [""] * len(chunk)
                for i, text in zip(answered, self.answer(queries, max_new_tokens, [f"{tasks[i]} doc {doc_ids[i]}"
                                                                                  for i in answered])):
                    texts[i] = cut_at_stop_strings(text, until)
                for context, kwargs, text in zip(contexts, all_kwargs, texts):
                    self.cache_hook.add_partial("generate_until", (context, kwargs), text)
                answers += texts
                bar.update(len(chunk))
        new = self.skipped - skipped_before
        if new:
            log.warning("ovis_lit: %d of %d requests answered \"\" because their input was refused: %s",
                        sum(new.values()), len(requests), dict(sorted(new.items())))
        return collator.get_original(answers)

    def decoding(self, kwargs: dict[str, Any]) -> tuple[int, list[str]]:
        """(max_new_tokens, stop strings) of a task's generation kwargs; sampling and beam search are refused."""
        kwargs = dict(kwargs or {})
        unknown = sorted(set(kwargs) - KNOWN_KWARGS)
        if unknown:
            log.warning("ovis_lit: generation kwargs %s are not used (greedy decoding)", unknown)
        temperature = float(kwargs.get("temperature") or 0)
        if temperature > 0 or kwargs.get("do_sample") or int(kwargs.get("num_beams") or 1) > 1:
            raise ValueError(f"ovis_lit decodes greedily, but the task asks for temperature={temperature}, "
                             f"do_sample={kwargs.get('do_sample')}, num_beams={kwargs.get('num_beams')}: pass "
                             "--gen_kwargs temperature=0,do_sample=False,num_beams=1 to run it greedily")
        max_new_tokens = int(kwargs.get("max_new_tokens") or self.default_max_new_tokens)
        until = kwargs.get("until") or []
        if isinstance(until, str):
            until = [until]
        if not isinstance(until, (list, tuple)) or not all(isinstance(s, str) for s in until):
            raise ValueError(f"ovis_lit: generation kwarg `until` must be a string or a list of strings, got {until!r}")
        return max_new_tokens, list(until)

    def answer(self, queries: list[tuple[str, Any]], max_new_tokens: int, names: list[str]) -> list[str]:
        """Answers as evals/run.py generates them (`suite.generate_for`): the batch at once; when the processor
        refuses an image the decoder accepted, one at a time, so that only the refused ones answer ""."""
        if not queries:
            return []
        options: dict[str, Any] = dict(self.pixels)
        if self.thinking["thinking"]:
            options.update(thinking=True, thinking_budget=self.thinking["thinking_budget"])
            max_new_tokens += self.thinking["thinking_tokens"]
        try:
            return generate_answers(self.model, self.processor, queries, batch_size=len(queries),
                                    max_new_tokens=max_new_tokens, progress=False, **options)
        except Rejected:
            answers = []
            for query, name in zip(queries, names):
                try:
                    answers += generate_answers(self.model, self.processor, [query], batch_size=1,
                                                max_new_tokens=max_new_tokens, progress=False, **options)
                except Rejected as e:
                    self.refused(e, name)
                    answers.append("")
            return answers

    def refused(self, error: Rejected, name: str, outcome: str = 'answered ""') -> None:
        reason = EVAL_REASONS.get(error.reason, error.reason)
        self.skipped[reason] += 1
        level = logging.WARNING if self.skipped[reason] <= WARNINGS_PER_REASON else logging.DEBUG
        log.log(level, "ovis_lit: %s %s (%s)", name, outcome, error)

    # ------------------------------------------------------------------------------------------------ inputs
    def visual_inputs(self, doc_to_visual, task: str, split: str, doc_id: int) -> list[Image.Image] | VideoFrames:
        """A document's visuals as the processor takes them: images (each through the guarded decoder) or the
        sampled frames of one video. `Rejected` for what cannot be used."""
        if doc_to_visual is None:
            return []
        try:
            doc = self.task_dict[task][split][doc_id]  # `datasets` decodes the row's image columns here
            raw = doc_to_visual(doc)
        except Image.DecompressionBombError as e:
            raise Rejected("too_many_pixels", str(e)) from e
        except OSError as e:  # PIL's errors for an image that does not decode (UnidentifiedImageError included)
            raise Rejected("decode_error", f"{type(e).__name__}: {e}") from e
        images, videos = [], []
        for visual in flatten(raw):
            if isinstance(visual, Image.Image):
                images.append(decode_opened(visual))
            elif isinstance(visual, (bytes, bytearray, memoryview)):
                images.append(decode_image(visual))
            elif isinstance(visual, (str, os.PathLike)):
                # the task names the file (its dataset's cache links to blobs): symbolic links are resolved
                path = Path(os.path.realpath(visual))
                if path.is_dir() or is_video_name(path.name):
                    videos.append(open_video(VideoSource(path, self.video_frames, **self.pixels)))
                else:
                    images.append(decode_image(path))
            elif isinstance(visual, dict) and ("array" in visual or "audio" in visual):
                raise Rejected("unsupported input", "audio")
            else:
                raise Rejected("unsupported input", f"a visual of type {type(visual).__name__}")
        if videos and (images or len(videos) > 1):
            raise Rejected("unsupported input", f"{len(videos)} videos and {len(images)} images (one video, or images)")
        return videos[0] if videos else images

    def prompt_text(self, context: str, visuals: list[Image.Image] | VideoFrames) -> str:
        """The task's prompt with its `<image>` / `<video>` marks kept only where there is one per visual (the
        processor puts the visuals before the text otherwise)."""
        video = isinstance(visuals, VideoFrames) and getattr(self.processor, "takes_video", False)
        marks = {IMAGE_TOKEN: 0 if video else len(visuals), VIDEO_TOKEN: 1 if video else 0}
        for mark, count in marks.items():
            if context.count(mark) != count:
                context = context.replace(mark, "")
        return context

    # ------------------------------------------------------------------------------------------------ likelihood
    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """Per request (the `loglikelihood` and `multiple_choice` output types): (the mean cross-entropy of the
        continuation's tokens given the prompt and visuals, whether greedy decoding would produce them). The mean
        loss, not a log-probability, is what lmms-eval's own models return and its tasks expect (`multiple_choice`
        picks the choice with the lowest). The prompt is the one generate_until's answer follows (thinking off: an
        Ovis2.5 prompt holds the closed empty thinking); the continuation is tokenized on its own (lmms-eval puts the
        separating space in it). One request at a time; a request whose visuals are refused gets (inf, False),
        counted as generate_until counts it.

        Each pair is returned as a `GenerationResult` whose `text` is the pair: lmms-eval 0.7.3's evaluator passes
        every response through `api.instance.unwrap_generation_output`, which turns a plain (loss, is_greedy) tuple
        into its str() (so its multiple_choice tasks fail for any model that returns the tuple), but passes a
        GenerationResult's `text` on as it is: the pair reaches the task's process_results intact."""
        results = []
        for request in tqdm(requests, disable=self.rank != 0, desc="ovis_lit log-likelihoods"):
            # (context, continuation, doc_to_visual, doc_id, task, split); acc_mutual_info adds ("", choice) requests
            context, continuation, *where = request.args
            to_visual, doc_id, task, split = where if where else (None, None, None, None)
            try:
                visuals = self.visual_inputs(to_visual, task, split, doc_id)
                pixels = {} if isinstance(visuals, VideoFrames) else self.pixels  # a video has its own budget
                prompt = self.processor.query(self.prompt_text(context, visuals), visuals, **pixels)
            except Rejected as e:
                self.refused(e, f"{task} doc {doc_id}", "scored (inf, False)")
                results.append((float("inf"), False))
                continue
            results.append(self.continuation_loss(prompt, continuation))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), results[-1])
        return [GenerationResult(text=pair) for pair in results]

    def continuation_loss(self, prompt, continuation: str) -> tuple[float, bool]:
        """(mean cross-entropy of the continuation's tokens after `prompt`, all of them the argmax)."""
        target = self.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not target:
            raise ValueError(f"ovis_lit: the continuation {continuation!r} has no tokens: nothing to score")
        sample = replace(prompt, input_ids=prompt.input_ids + target, labels=prompt.labels + target)
        batch = self.processor.collate([sample])
        device = next(self.model.parameters()).device
        out = self.model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                         pixel_values=batch["pixel_values"].to(device), return_logits=True,
                         grid_thws=batch["grid_thws"].to(device) if "grid_thws" in batch else None)
        start = len(prompt.input_ids) - 1  # the logits at position i predict token i + 1
        logprobs = torch.log_softmax(out.logits[0, start:start + len(target)].float(), dim=-1)
        expected = torch.tensor(target, device=logprobs.device)
        loss = -logprobs.gather(1, expected[:, None]).mean().item()
        return loss, bool((logprobs.argmax(dim=-1) == expected).all())

    # ------------------------------------------------------------------------------------------------ not supported
    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("ovis_lit answers generate_until tasks; multi-round generation is not implemented")


def flatten(raw: Any) -> list[Any]:
    """doc_to_visual's result as a flat list: None, one visual, a list, or a list holding one list."""
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        return [raw]
    out = []
    for visual in raw:
        out += list(visual) if isinstance(visual, (list, tuple)) else [visual]
    return out


def cut_at_stop_strings(text: str, until: list[str]) -> str:
    """The text before the first of the stop strings it holds (empty strings are not stop strings), stripped."""
    cut = min((text.index(s) for s in until if s and s in text), default=len(text))
    return text[:cut].strip()
