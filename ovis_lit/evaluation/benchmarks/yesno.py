"""Shared loading and answer reading for yes/no benchmarks (MME, POPE, HallusionBench): index, question, answer
(yes/no), category, image. Subclasses turn the per-question judgements into their metrics (`rate`)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable, ClassVar

from ...rejection import Rejected
from ..modes import LMMS_EVAL, VLMEVALKIT, vlmevalkit
from ..tsv import cell, image_key
from .base import SHORT_ANSWER, Benchmark, Item, Scores


class YesNo(Benchmark):
    default_max_new_tokens = 16
    prompt_template = "{question}\n" + SHORT_ANSWER
    modes = (VLMEVALKIT, LMMS_EVAL)
    # how each mode reads yes / no (None: unknown, scored wrong); lmms-eval reads MME and POPE differently
    readers: ClassVar[dict[str, Callable[[str], str | None]]] = {VLMEVALKIT: vlmevalkit.extract_yes_no}

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer"], self._item)

    def _item(self, row: dict[str, str], images) -> Item:
        gold = cell(row, "answer").lower()
        if gold not in ("yes", "no"):
            raise Rejected("answer is not yes or no")
        if not cell(row, "question"):
            raise Rejected("empty question")
        target = {"answer": gold, "category": cell(row, "category"), "image": image_key(row),
                  **self.more_target(row)}
        return Item(cell(row, "index"), f"{self.question_text(cell(row, 'question'))}\n{SHORT_ANSWER}", images(),
                    target)

    def more_target(self, row: dict[str, str]) -> dict[str, Any]:
        """What else the scorer needs from a row (raise Rejected for rows it cannot score)."""
        return {}

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        read = self.readers[self.mode]
        predictions = []
        for item, answer in zip(items, answers, strict=True):
            said = read(answer)
            predictions.append({"key": item.key, "answer": answer, "extracted": said, "gold": item.target["answer"],
                                "correct": said == item.target["answer"]})
        return self.rate(items, predictions)

    @abstractmethod
    def rate(self, items: list[Item], predictions: list[dict]) -> Scores:
        """Metrics from the per-question judgements (predictions[k] belongs to items[k])."""
