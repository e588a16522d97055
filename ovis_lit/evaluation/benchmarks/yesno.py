"""Shared loading for yes/no benchmarks (MME, POPE): index, question, answer (yes/no), category, image."""

from __future__ import annotations

from ...rejection import Rejected
from ..extraction import extract_yes_no
from ..tsv import cell, image_key
from .base import SHORT_ANSWER, Benchmark, Item


class YesNo(Benchmark):
    default_max_new_tokens = 16
    prompt_template = "{question}\n" + SHORT_ANSWER

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer"], self._item)

    @staticmethod
    def _item(row: dict[str, str], images) -> Item:
        gold = cell(row, "answer").lower()
        if gold not in ("yes", "no"):
            raise Rejected("answer is not yes or no")
        if not cell(row, "question"):
            raise Rejected("empty question")
        target = {"answer": gold, "category": cell(row, "category"), "image": image_key(row)}
        return Item(cell(row, "index"), f"{cell(row, 'question')}\n{SHORT_ANSWER}", images(), target)


def judged(items: list[Item], answers: list[str]) -> list[dict]:
    """Per-item predictions: the extracted yes/no (None: failed) and whether it is right."""
    out = []
    for item, answer in zip(items, answers, strict=True):
        said = extract_yes_no(answer)
        out.append({"key": item.key, "answer": answer, "extracted": said, "gold": item.target["answer"],
                    "correct": said == item.target["answer"]})
    return out
