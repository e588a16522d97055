"""What every benchmark is: a file read into prompt items (pinned prompts), and a pure scorer of answers."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from ...rejection import Rejected
from ..tsv import WARNINGS_PER_REASON, ImageSource, image_sources, index_rows, read_rows
from ..video import VideoSource

log = logging.getLogger(__name__)

SHORT_ANSWER = "Answer the question using a single word or phrase."


@dataclass
class Item:
    key: str  # the row's index: unique within a benchmark file
    prompt: str  # the exact user-turn text the model sees (images are prepended by the processor)
    images: list[ImageSource]
    target: dict[str, Any]  # what the scorer needs: gold answer(s), options, category, ...
    video: VideoSource | None = None  # a video item's frames (then `images` is empty): the processor's `<video>`


@dataclass
class Scores:
    metrics: dict[str, float]  # flat numbers: the summary table and W&B
    predictions: list[dict[str, Any]]  # one per item, in item order
    details: dict[str, Any] = field(default_factory=dict)  # breakdowns (per category, per split)


class Benchmark(ABC):
    kind: ClassVar[str]
    headline: ClassVar[str] = "accuracy"  # the metric the summary table shows first
    # the pinned prompt, stored with the results: "[...]" is a line present only when the row has that field;
    # the images come first (one <image> line each), added by the processor
    prompt_template: ClassVar[str | dict[str, str]]
    default_max_new_tokens: ClassVar[int] = 32
    # the scoring modes (evaluation/modes) this benchmark reproduces; the first is its default. Empty: one fixed way.
    modes: ClassVar[tuple[str, ...]] = ()
    # how a mode words the question before the instruction, as that toolkit's prompt does, and the pinned prompt
    # that results: mode -> (question -> question, prompt template)
    rewording: ClassVar[dict[str, tuple[Callable[[str], str], str]]] = {}

    def __init__(self, path: str | Path, max_new_tokens: int | None = None, mode: str | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None, **options: Any):
        if options:
            raise TypeError(f"{self.kind}: unknown option(s) {sorted(options)}")
        if mode is not None and mode not in self.modes:
            known = f"one of {list(self.modes)}" if self.modes else "none (it is scored one way)"
            raise ValueError(f"{self.kind}: unknown scoring mode {mode!r}; its modes are {known}")
        self.mode = mode or (self.modes[0] if self.modes else None)
        if self.mode in self.rewording:
            self.prompt_template = self.rewording[self.mode][1]
        self.path = Path(path)
        # each image's (or video frame's) pixel budget at native resolution (Ovis2.5); None: the processor's
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.max_new_tokens = max_new_tokens or self.default_max_new_tokens
        self.skipped: Counter[str] = Counter()  # rows dropped while loading, by reason

    def question_text(self, question: str) -> str:
        """The question as this benchmark's mode words it."""
        reword = self.rewording.get(self.mode)
        return reword[0](question) if reword else question

    quiet: bool = False  # while checking: rows skipped are not logged (they are when the benchmark runs)

    def load(self) -> list[Item]:
        """Read the file; unusable rows are counted in `self.skipped` (a file that is wrong as a whole raises)."""
        self.skipped = Counter()
        return self.read_items()

    def check(self) -> None:
        """Read the file once and drop what was read: evals/run.py checks every benchmark before it loads the model,
        so that a file wrong as a whole (missing, duplicate indices, no usable row, ...) fails the run at once, not
        after the model loaded and other benchmarks ran."""
        self.quiet = True
        try:
            items = self.load()
            if not items:  # a header-only file, or every row unusable: a score of it would mean nothing
                skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items())) or "none"
                raise ValueError(f"{self.path}: no usable row to score (rows skipped: {skipped})")
        finally:
            self.quiet, self.skipped = False, Counter()

    @abstractmethod
    def read_items(self) -> list[Item]:
        """The items of the file, with pinned prompts; count unusable rows in `self.skipped`."""

    @abstractmethod
    def score(self, items: list[Item], answers: list[str]) -> Scores:
        """Pure: the same items and answers always give the same numbers."""

    def items_from_tsv(
        self, required: list[str], make: Callable[[dict[str, str], Callable[[], list[ImageSource]]], Item]
    ) -> list[Item]:
        """Items of the benchmark TSV: `make(row, images)` builds one (calling `images()` to resolve the row's images)
        or raises Rejected, which drops the row and counts its reason in `self.skipped` (rows the TSV reader
        refuses are counted there too). Each dropped row's line is logged."""
        table = read_rows(self.path, required, log_rows=not self.quiet)
        self.skipped.update(table.rejected)
        by_index = index_rows(table.rows)
        items = []
        for row, line in zip(table.rows, table.lines):
            try:
                items.append(make(row, lambda row=row: image_sources(row, by_index, self.path.parent)))
            except Rejected as e:
                self.skipped[e.reason] += 1
                loud = not self.quiet and self.skipped[e.reason] <= WARNINGS_PER_REASON
                level = logging.WARNING if loud else logging.DEBUG
                log.log(level, "%s line %d: skipped (%s)", self.path, line, e)
        return items

    def describe(self) -> dict[str, Any]:
        described = {"kind": self.kind, "path": str(self.path), "prompt": self.prompt_template,
                     "max_new_tokens": self.max_new_tokens, "min_pixels": self.min_pixels,
                     "max_pixels": self.max_pixels}
        if self.mode:
            described["mode"] = self.mode
        return described


BENCHMARKS: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    BENCHMARKS[cls.kind] = cls
    return cls


def build_benchmark(kind: str, **options: Any) -> Benchmark:
    if kind not in BENCHMARKS:
        raise ValueError(f"unknown benchmark kind {kind!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[kind](**options)


def ratio(numerator: float, denominator: float) -> float:
    """0.0 for an empty group inside a breakdown; a benchmark with nothing scored at all gets no score instead
    (suite.run_benchmark)."""
    return numerator / denominator if denominator else 0.0
