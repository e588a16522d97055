"""MMMU (dev/validation): college-level questions with one or more images, multiple choice or open.

VLMEvalKit's MMMU_DEV_VAL.tsv: index, question (with `<image k>` labels), A, B, ... (absent for open questions),
answer (a letter; for open questions the text, sometimes a list literal of accepted answers), category, split,
image (one base64 image or a list literal of several). A question is open when it has no options (or its
`question_type` column says "open").

Images are all placed before the text, in file order, and the `<image k>` labels stay in the question so it can
still name them. Parsing is deterministic (there is no random fallback):
- multiple choice: the shared letter extraction (extraction.extract_choice); a failure is wrong and counted;
- open: a numeric gold answer is right when any number in the answer equals it to 2 decimals ("1,000" = 1000);
  a text gold answer is right when it appears in the answer as whole words, case and edge punctuation aside.
"""

from __future__ import annotations

import re
from collections import defaultdict

from ...rejection import Rejected
from ..extraction import extract_choice, normalise_text
from ..mcq import LETTERS, MC_INSTRUCTION, options_of
from ..tsv import cell, parse_list
from .base import SHORT_ANSWER, Benchmark, Item, Scores, ratio, register

NUMBER = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:e[-+]?\d+)?")
SPLIT_NAMES = {"val": "validation", "validation": "validation", "dev": "dev", "test": "test"}


def parse_number(text: str) -> float | None:
    """The number a whole string spells ("1,000", "-2.5", "50%"), or None."""
    text = text.strip().rstrip("%").replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def numbers_in(text: str) -> list[float]:
    found = []
    for match in NUMBER.finditer(text):
        value = parse_number(match.group(0))
        if value is not None:
            found.append(value)
    return found


def open_answer_correct(prediction: str, golds: list[str]) -> bool:
    answer = normalise_text(prediction)
    if not answer:
        return False
    answer_numbers = {round(x, 2) for x in numbers_in(answer)}
    for gold in golds:
        gold = normalise_text(gold)
        if not gold:
            continue
        value = parse_number(gold)
        if value is not None:
            if round(value, 2) in answer_numbers:
                return True
        elif re.search(rf"(?<!\w){re.escape(gold)}(?!\w)", answer):
            return True
    return False


@register
class MMMU(Benchmark):
    kind = "mmmu"
    default_max_new_tokens = 64
    prompt_template = {
        "multiple-choice": "{question}\nA. {A}\nB. {B}\n...\n" + MC_INSTRUCTION,
        "open": "{question}\n" + SHORT_ANSWER,
    }

    def __init__(self, path, max_new_tokens=None, split: str | None = "validation", **options):
        super().__init__(path, max_new_tokens, **options)
        self.split = SPLIT_NAMES.get(split.lower(), split.lower()) if split else None

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer"], self._row_item)

    def _row_item(self, row: dict[str, str], images) -> Item:
        split = cell(row, "split").lower()
        if self.split and split and SPLIT_NAMES.get(split, split) != self.split:
            raise Rejected(f"not in the {self.split} split")
        return self.item(row, images())

    def item(self, row: dict[str, str], images: list) -> Item:
        question = cell(row, "question")
        answer = cell(row, "answer")
        if not question or not answer:
            raise Rejected("empty question or answer")
        options = options_of({k: cell(row, k) for k in LETTERS})
        is_open = not options or cell(row, "question_type").lower() == "open"
        target = {"category": cell(row, "category"), "open": is_open}
        if is_open:
            target["answers"] = parse_list(answer)
            prompt = f"{question}\n{SHORT_ANSWER}"
        else:
            if answer.upper() not in options:
                raise Rejected("answer is not one of the option letters")
            target.update(answer=answer.upper(), options=options)
            prompt = "\n".join([question, *(f"{k}. {v}" for k, v in options.items()), MC_INSTRUCTION])
        return Item(cell(row, "index"), prompt, images, target)

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        return score_mmmu(items, answers)


def score_mmmu(items: list[Item], answers: list[str]) -> Scores:
    predictions = []
    per_category: dict[str, list[bool]] = defaultdict(list)
    for item, answer in zip(items, answers, strict=True):
        if item.target["open"]:
            correct = open_answer_correct(answer, item.target["answers"])
            p = {"key": item.key, "answer": answer, "type": "open", "gold": item.target["answers"], "correct": correct}
        else:
            choice = extract_choice(answer, item.target["options"])
            correct = choice.letter == item.target["answer"]
            p = {"key": item.key, "answer": answer, "type": "multiple-choice", "extracted": choice.letter,
                 "rule": choice.rule, "gold": item.target["answer"], "correct": correct}
        predictions.append(p)
        per_category[item.target["category"] or "all"].append(correct)
    mc = [p["correct"] for p in predictions if p["type"] == "multiple-choice"]
    open_ = [p["correct"] for p in predictions if p["type"] == "open"]
    metrics = {
        "accuracy": ratio(sum(mc) + sum(open_), len(predictions)),
        "mc_accuracy": ratio(sum(mc), len(mc)),
        "open_accuracy": ratio(sum(open_), len(open_)),
        "questions": len(predictions),
        "failed_extractions": sum(p.get("extracted", "") is None for p in predictions),
    }
    details = {"per_category": {c: ratio(sum(v), len(v)) for c, v in sorted(per_category.items())}}
    return Scores(metrics, predictions, details)
