"""MMMU (dev/validation): college-level questions with one or more images, multiple choice or open.

VLMEvalKit's MMMU_DEV_VAL.tsv: index, question (with `<image k>` labels), A, B, ... (absent for open questions),
answer (a letter; for open questions the text), category, split, image (one base64 image or a list literal of
several). A question is open when it has no options (or its `question_type` column says "open").

Scored in lmms-eval's way (the `lmms_eval` mode, the only one; modes/lmms_eval.py has the parser): its prompt (the
question, the lettered options, a blank line, the instruction; `<image k>` labels stay, as lmms-eval's default
non-interleaved format keeps them), its multiple-choice parser with a random letter for an answer it cannot read
(drawn from `random.Random(seed)` in item order, seed 0 as lmms-eval seeds Python's random), and its open-answer
matching. Images are all placed before the text, in file order. Accuracy is over all questions (micro), with
breakdowns by `category`.
"""

from __future__ import annotations

import random
from collections import defaultdict

from ...rejection import Rejected
from ..mcq import LETTERS, MC_INSTRUCTION, options_of
from ..modes import LMMS_EVAL
from ..modes.lmms_eval import mmmu_choice, mmmu_open_correct
from ..tsv import cell
from .base import SHORT_ANSWER, Benchmark, Item, Scores, ratio, register

SPLIT_NAMES = {"val": "validation", "validation": "validation", "dev": "dev", "test": "test"}


@register
class MMMU(Benchmark):
    kind = "mmmu"
    default_max_new_tokens = 64
    modes = (LMMS_EVAL,)
    prompt_template = {
        "multiple-choice": "{question}\nA. {A}\nB. {B}\n...\n\n" + MC_INSTRUCTION,
        "open": "{question}\n\n" + SHORT_ANSWER,
    }

    def __init__(self, path, max_new_tokens=None, split: str | None = "validation", seed: int = 0, **options):
        super().__init__(path, max_new_tokens, **options)
        self.split = SPLIT_NAMES.get(split.lower(), split.lower()) if split else None
        self.seed = seed

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
        target = {"category": cell(row, "category"), "open": is_open, "answer": answer}
        if is_open:
            prompt = f"{question}\n\n{SHORT_ANSWER}"
        else:
            if answer.upper() not in options:
                raise Rejected("answer is not one of the option letters")
            target.update(answer=answer.upper(), options=options)
            lettered = "\n".join(f"{k}. {v}" for k, v in options.items())
            prompt = f"{question}\n{lettered}\n\n{MC_INSTRUCTION}"
        return Item(cell(row, "index"), prompt, images, target)

    def describe(self) -> dict:
        return {**super().describe(), "seed": self.seed}

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        rng = random.Random(self.seed)  # a fresh generator per scoring: the same answers give the same guesses
        predictions = []
        per_category: dict[str, list[bool]] = defaultdict(list)
        for item, answer in zip(items, answers, strict=True):
            gold = item.target["answer"]
            p = {"key": item.key, "answer": answer, "gold": gold}
            if item.target["open"]:
                p.update(type="open", correct=mmmu_open_correct(answer, gold))
            else:
                letter, rule = mmmu_choice(answer, item.target["options"], rng)
                p.update(type="multiple-choice", extracted=letter, rule=rule, correct=letter == gold)
            predictions.append(p)
            per_category[item.target["category"] or "all"].append(p["correct"])
        mc = [p["correct"] for p in predictions if p["type"] == "multiple-choice"]
        open_ = [p["correct"] for p in predictions if p["type"] == "open"]
        metrics = {
            "accuracy": ratio(sum(mc) + sum(open_), len(predictions)),
            "mc_accuracy": ratio(sum(mc), len(mc)),
            "open_accuracy": ratio(sum(open_), len(open_)),
            "questions": len(predictions),
            "random_guesses": sum(p.get("rule") == "random guess" for p in predictions),
        }
        details = {"per_category": {c: ratio(sum(v), len(v)) for c, v in sorted(per_category.items())}}
        return Scores(metrics, predictions, details)
