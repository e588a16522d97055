"""Run one benchmark on an in-memory model: load items, generate (batched, greedy), score, time."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from ..model.ovis import OvisModel
from ..processing.image_decoding import decode_image
from ..processing.processor import OvisProcessor
from ..rejection import Rejected
from .benchmarks.base import Benchmark, Item, Scores
from .generation import generate_answers
from .tsv import image_bytes
from .video import open_video

log = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    name: str
    benchmark: dict[str, Any]  # kind, path, pinned prompt, max_new_tokens
    scores: Scores
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows not scored
    seconds: float = 0.0  # generation only

    @property
    def samples_per_s(self) -> float:
        return round(len(self.scores.predictions) / self.seconds, 2) if self.seconds else 0.0


# What an image the guarded decoder refuses is counted as in a benchmark's `skipped` (the phrases evaluation
# summaries have always shown; the decoder's own reasons are training's snake_case codes)
EVAL_REASONS = {
    "decode_error": "undecodable image",
    "too_many_pixels": "image over the pixel limit",
    "missing_image": "missing image file",
    "not_a_file": "unreadable image file",
    "image_too_large": "unreadable image file",
}


def _decoded(item: Item) -> list[Image.Image]:
    """The item's images (or its video's sampled frames), through the guarded decoders training uses (Rejected
    for any that cannot be used)."""
    if item.video is not None:  # VideoFrames: the processor takes them as one video
        return open_video(item.video)
    return [decode_image(image_bytes(source)) for source in item.images]


def generate_for(
    model: OvisModel,
    processor: OvisProcessor,
    items: list[Item],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
    **generation: Any,
) -> tuple[list[Item], list[str], Counter]:
    """Answers for the items whose images decode (images are decoded one batch at a time, to bound memory).
    `generation`: generate_answers' thinking, thinking_budget, min_pixels, max_pixels. Returns (answered items,
    answers, skip counts)."""
    answered: list[Item] = []
    answers: list[str] = []
    skipped: Counter = Counter()
    with tqdm(total=len(items), desc=desc, disable=not progress, unit="sample") as bar:
        for start in range(0, len(items), batch_size):
            chunk, queries = [], []
            for item in items[start : start + batch_size]:
                try:
                    queries.append((item.prompt, _decoded(item)))
                    chunk.append(item)
                except Rejected as e:  # the decoder and the file reader raise only this
                    skipped[EVAL_REASONS.get(e.reason, e.reason)] += 1
                    log.warning("%s %s: %s", desc, item.key, e)
            if queries:
                try:
                    answers += generate_answers(model, processor, queries, batch_size=len(queries),
                                                max_new_tokens=max_new_tokens, progress=False, **generation)
                    answered += chunk
                except Rejected:
                    # The processor refused an image the decoder accepted (e.g. an aspect ratio Ovis2.5's resize
                    # cannot represent) before anything was generated: answer this chunk's items one at a time, so
                    # only the refused ones are skipped (left padding: the batch size never changes an answer).
                    for item, query in zip(chunk, queries):
                        try:
                            answers += generate_answers(model, processor, [query], batch_size=1,
                                                        max_new_tokens=max_new_tokens, progress=False, **generation)
                            answered.append(item)
                        except Rejected as e:
                            skipped[EVAL_REASONS.get(e.reason, e.reason)] += 1
                            log.warning("%s %s: %s", desc, item.key, e)
            bar.update(len(items[start : start + batch_size]))
    return answered, answers, skipped


# metrics that count things: they stay numbers (0) when nothing was scored; every other metric becomes None
COUNT_METRICS = frozenset({"questions", "rows", "images", "failed_extractions", "empty_answers", "judge_failures",
                           "judge_calls", "random_guesses"})


def unscored(scores: Scores) -> Scores:
    """The scores of a benchmark with no scored item: no score (None), not a 0.0 that reads like a result."""
    metrics = {k: (v if k in COUNT_METRICS else None) for k, v in scores.metrics.items()}
    return Scores(metrics, scores.predictions, {**scores.details, "unscored": "no item was scored"})


def run_benchmark(
    model: OvisModel,
    processor: OvisProcessor,
    benchmark: Benchmark,
    name: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    progress: bool = True,
    items: list[Item] | None = None,
    thinking: bool = False,
    thinking_budget: int | None = None,
    thinking_tokens: int = 0,
) -> BenchmarkResult:
    """`items`: the benchmark's items when the caller has loaded them already. `thinking` (Ovis2.5): think before
    answering, with `thinking_tokens` new tokens allowed for it on top of the benchmark's max_new_tokens (which
    count the answer), at most `thinking_budget` of them when set (then the thinking is concluded)."""
    name = name or benchmark.kind
    budget = pixel_budget(benchmark, processor)  # refuses a pixel budget a crop processor cannot take, at once
    max_new_tokens = benchmark.max_new_tokens
    if thinking:
        if thinking_budget is not None and thinking_budget > thinking_tokens:
            raise ValueError(f"thinking_budget {thinking_budget} is more than the thinking_tokens {thinking_tokens} "
                             "allowed for thinking")
        max_new_tokens += thinking_tokens
    items = benchmark.load() if items is None else items
    if limit is not None:
        items = items[:limit]
    started = time.perf_counter()
    answered, answers, skipped = generate_for(
        model, processor, items, max_new_tokens, batch_size, progress, desc=name,
        **({"thinking": True, "thinking_budget": thinking_budget} if thinking else {}),
        **{k: v for k, v in (("min_pixels", benchmark.min_pixels), ("max_pixels", benchmark.max_pixels))
           if v is not None})
    seconds = time.perf_counter() - started
    scores = benchmark.score(answered, answers)
    if not answered:
        scores = unscored(scores)
        log.warning("%s: no item was scored (%d loaded, skipped: %s): no score is reported", name, len(items),
                    dict(skipped + benchmark.skipped) or "nothing")
    for item, prediction in zip(answered, scores.predictions):
        prediction["prompt"] = item.prompt
    skipped.update(benchmark.skipped)
    # described after scoring: a judged benchmark's description names the judge it loaded while scoring
    described = {**benchmark.describe(), **budget, "thinking": thinking, "thinking_budget": thinking_budget,
                 "max_new_tokens": max_new_tokens}
    return BenchmarkResult(name, described, scores, dict(sorted(skipped.items())), round(seconds, 3))


def pixel_budget(benchmark: Benchmark, processor: OvisProcessor | None) -> dict[str, int | None]:
    """The pixel budget each image (or video frame) of the benchmark is resized within: the benchmark's, else the
    native-resolution processor's (Ovis2.5); None for a processor that cuts crops instead (Ovis 1.6/2), which
    refuses a benchmark that sets one."""
    preprocessor = getattr(processor, "image_preprocessor", None)
    native = hasattr(preprocessor, "min_pixels")
    if not native and processor is not None and (benchmark.min_pixels or benchmark.max_pixels):
        raise ValueError(f"{benchmark.kind}: min_pixels / max_pixels need a native-resolution (Ovis2.5) checkpoint; "
                         "this one's processor cuts images into crops")
    return {"min_pixels": benchmark.min_pixels if benchmark.min_pixels or not native else preprocessor.min_pixels,
            "max_pixels": benchmark.max_pixels if benchmark.max_pixels or not native else preprocessor.max_pixels}
