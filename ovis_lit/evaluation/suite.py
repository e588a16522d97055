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
from ..processing.processor import OvisProcessor
from .benchmarks.base import Benchmark, Item, Scores
from .generation import generate_answers
from .tsv import BadImage, open_image
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


def _decoded(item: Item) -> list[Image.Image]:
    if item.video is not None:  # VideoFrames: the processor takes them as one video
        return open_video(item.video)
    return [open_image(source) for source in item.images]


def generate_for(
    model: OvisModel,
    processor: OvisProcessor,
    items: list[Item],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
) -> tuple[list[Item], list[str], Counter]:
    """Answers for the items whose images decode (images are decoded one batch at a time, to bound memory).
    Returns (answered items, answers, skip counts)."""
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
                except BadImage as e:  # every decode goes through tsv.open_image, which raises only this
                    skipped[e.reason] += 1
                    log.warning("%s %s: %s", desc, item.key, e)
            if queries:
                answers += generate_answers(model, processor, queries, batch_size=len(queries),
                                            max_new_tokens=max_new_tokens, progress=False)
                answered += chunk
            bar.update(len(items[start : start + batch_size]))
    return answered, answers, skipped


# metrics that count things: they stay numbers (0) when nothing was scored; every other metric becomes None
COUNT_METRICS = frozenset({"questions", "rows", "images", "failed_extractions", "empty_answers"})


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
) -> BenchmarkResult:
    """`items`: the benchmark's items when the caller has loaded them already."""
    name = name or benchmark.kind
    items = benchmark.load() if items is None else items
    if limit is not None:
        items = items[:limit]
    started = time.perf_counter()
    answered, answers, skipped = generate_for(model, processor, items, benchmark.max_new_tokens, batch_size,
                                              progress, desc=name)
    seconds = time.perf_counter() - started
    scores = benchmark.score(answered, answers)
    if not answered:
        scores = unscored(scores)
        log.warning("%s: no item was scored (%d loaded, skipped: %s): no score is reported", name, len(items),
                    dict(skipped + benchmark.skipped) or "nothing")
    for item, prediction in zip(answered, scores.predictions):
        prediction["prompt"] = item.prompt
    skipped.update(benchmark.skipped)
    return BenchmarkResult(name, benchmark.describe(), scores, dict(sorted(skipped.items())), round(seconds, 3))
