"""MMBench and MMStar: lettered multiple choice in VLMEvalKit's TSV layout, with circular evaluation.

Columns: index, question, hint (optional), A, B, C, D... (empty when fewer options), answer (a letter), category,
l2-category (optional), image. A circular file holds every question once per rotation of its options; the copies'
indices differ by multiples of 1,000,000, so `index % 1_000_000` names the question. Under circular evaluation a
question counts only when every one of its rows is answered right. AI2D and RealWorldQA use the same layout, scored
row by row. Answers are read with VLMEvalKit's exact-matching rules (modes/vlmevalkit.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ...rejection import Rejected
from ..mcq import LETTERS, MC_INSTRUCTION, mcq_prompt, options_of
from ..modes import VLMEVALKIT
from ..modes.vlmevalkit import extract_choice
from ..tsv import cell, integer_index
from .base import Benchmark, Item, Scores, ratio, register

CIRCULAR_STRIDE = 1_000_000


def question_group(index: str) -> str:
    """Rotated copies share `index % 1e6`; a non-numeric index is its own group."""
    try:
        return str(int(float(index)) % CIRCULAR_STRIDE)
    except (ValueError, OverflowError):
        return index


class MultipleChoice(Benchmark):
    """Lettered options scored by the extracted letter. Subclasses pin the prompt and the circular default."""

    instruction: str = MC_INSTRUCTION
    circular_default: bool | str = False
    default_max_new_tokens = 32
    modes = (VLMEVALKIT,)

    def __init__(self, path, max_new_tokens: int | None = None, circular: bool | str | None = None, **options: Any):
        super().__init__(path, max_new_tokens, **options)  # mode: only vlmevalkit
        self.circular = self.circular_default if circular is None else circular
        if self.circular not in (True, False, "auto"):
            raise ValueError(f"{self.kind}: circular must be true, false or auto, not {self.circular!r}")

    def prompt(self, row: dict[str, str]) -> str:
        """`row`: the cleaned question, hint and option cells."""
        return mcq_prompt(row, self.instruction)

    def keep(self, row: dict[str, str]) -> None:
        """Raise Rejected for rows this benchmark does not score."""

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer", "A", "B"], self._item)

    def _item(self, row: dict[str, str], images) -> Item:
        self.keep(row)
        clean = {k: cell(row, k) for k in ("question", "hint", *LETTERS)}
        options = options_of(clean)
        answer = cell(row, "answer").upper()
        if len(options) < 2:
            raise Rejected("fewer than two options")
        if answer not in options:
            raise Rejected("answer is not one of the option letters")
        index = cell(row, "index")
        if self.circular is not False:
            integer_index(row)  # circular groups are index % 1e6: a non-numeric index would be a group of its own
        found = images()
        target = {
            "answer": answer,
            "options": options,
            "category": cell(row, "category") or "all",
            "l2_category": cell(row, "l2-category") or cell(row, "l2_category"),
            "group": question_group(index),
        }
        return Item(index, self.prompt(clean), found, target)

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        return score_choices(items, answers, self.circular)


def score_choices(items: list[Item], answers: list[str], circular: bool | str = "auto") -> Scores:
    """Accuracy of extracted letters; circular: a question (group of rows) is right only if all its rows are."""
    predictions = []
    groups: dict[str, list[bool]] = defaultdict(list)
    group_items: dict[str, Item] = {}
    for item, answer in zip(items, answers, strict=True):
        choice = extract_choice(answer, item.target["options"])
        correct = choice.letter == item.target["answer"]
        group = item.target["group"]
        groups[group].append(correct)
        group_items.setdefault(group, item)  # the first row (the unrotated one) names the category
        predictions.append({"key": item.key, "answer": answer, "extracted": choice.letter, "rule": choice.rule,
                            "gold": item.target["answer"], "correct": correct, "group": group})
    if circular == "auto":
        circular = any(len(v) > 1 for v in groups.values())
    rows_right = sum(p["correct"] for p in predictions)
    if circular:
        question_right = {g: all(v) for g, v in groups.items()}
    else:  # every row is a question of its own
        question_right = {i: p["correct"] for i, p in enumerate(predictions)}
    for p in predictions:
        p["question_correct"] = question_right[p["group"]] if circular else p["correct"]

    def per(field: str) -> dict[str, float]:
        tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for key, right in question_right.items():
            item = group_items[key] if circular else items[key]
            name = item.target.get(field)
            if name:
                tally[name][0] += right
                tally[name][1] += 1
        return {name: ratio(r, n) for name, (r, n) in sorted(tally.items())}

    failed = sum(p["extracted"] is None for p in predictions)  # "Z" (a refusal) is read, and wrong
    metrics = {
        "accuracy": ratio(sum(question_right.values()), len(question_right)),
        "row_accuracy": ratio(rows_right, len(predictions)),
        "questions": len(question_right),
        "rows": len(predictions),
        "failed_extractions": failed,
    }
    details = {"circular": bool(circular), "per_category": per("category"), "per_l2_category": per("l2_category")}
    return Scores(metrics, predictions, details)


@register
class MMBench(MultipleChoice):
    kind = "mmbench"
    circular_default = "auto"  # circular whenever the file holds rotated copies
    prompt_template = "[Hint: {hint}\n]{question}\nA. {A}\nB. {B}\n...\n" + MC_INSTRUCTION


@register
class MMStar(MultipleChoice):
    kind = "mmstar"
    circular_default = False
    prompt_template = MMBench.prompt_template


@register
class AI2D(MultipleChoice):
    """VLMEvalKit's AI2D_TEST.tsv (diagram questions, four options)."""

    kind = "ai2d"
    circular_default = False
    prompt_template = MMBench.prompt_template


@register
class RealWorldQA(MultipleChoice):
    """VLMEvalKit's RealWorldQA.tsv (photographs; the question text carries the dataset's own answer request)."""

    kind = "realworldqa"
    circular_default = False
    prompt_template = MMBench.prompt_template


def circular_copies(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """A circular file from a plain MMBench-layout one, as VLMEvalKit lays it out: the questions as they are, then
    rotation k of every question with index + k * 1,000,000, options shifted by k (the answer letter follows its
    option) and the image a reference to the original row."""
    originals = [dict(r) for r in rows]
    rotations: dict[int, list[dict[str, str]]] = defaultdict(list)
    for row in originals:
        index = int(float(cell(row, "index")))
        if index >= CIRCULAR_STRIDE:
            raise ValueError(f"index {index} is already a rotated copy (>= {CIRCULAR_STRIDE})")
        letters = list(options_of({k: cell(row, k) for k in LETTERS}))
        texts = [cell(row, k) for k in letters]
        gold = letters.index(cell(row, "answer").upper())
        for k in range(1, len(letters)):
            copy = dict(row, index=str(index + k * CIRCULAR_STRIDE), image=str(index))
            copy.update(zip(letters, texts[k:] + texts[:k]))
            copy["answer"] = letters[(gold - k) % len(letters)]
            rotations[k].append(copy)
    return originals + [r for k in sorted(rotations) for r in rotations[k]]
