"""TextVQA and VQAv2: open short answers scored by VQA accuracy against the human answers (see vqa_metric).

Files:
- VLMEvalKit's TSV (TextVQA_VAL.tsv; the same shape for VQAv2): index, question, answer (a list literal of the
  human answers), image; optional answer_type / question_type / category columns give breakdowns.
- VQAv2 also reads the official release: `path` = the questions JSON (v2_OpenEnded_mscoco_val2014_questions.json),
  `annotations` = the annotations JSON, `image_dir` = the COCO images, named by `image_pattern`.
Prompt: the question and the short-answer instruction; TextVQA gets no OCR tokens (as in VLMEvalKit).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ...rejection import Rejected
from ..tsv import cell, parse_list
from ..vqa_metric import normalise_answer, vqa_accuracy
from .base import SHORT_ANSWER, Benchmark, Item, Scores, ratio, register


class VQA(Benchmark):
    default_max_new_tokens = 32
    prompt_template = "{question}\n" + SHORT_ANSWER

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer"], self._row_item)

    def _row_item(self, row: dict[str, str], images) -> Item:
        answers = [a for a in parse_list(cell(row, "answer")) if a] if cell(row, "answer") else []
        if not answers:
            raise Rejected("no human answers")
        breakdown = cell(row, "answer_type") or cell(row, "category")
        return self.item(cell(row, "index"), cell(row, "question"), images(), answers, breakdown)

    @staticmethod
    def item(key: str, question: str, images: list, answers: list[str], breakdown: str = "") -> Item:
        return Item(key, f"{question}\n{SHORT_ANSWER}", images, {"answers": answers, "type": breakdown})

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        return score_vqa(items, answers)


def score_vqa(items: list[Item], answers: list[str]) -> Scores:
    predictions = []
    per_type: dict[str, list[float]] = defaultdict(list)
    for item, answer in zip(items, answers, strict=True):
        acc = vqa_accuracy(answer, item.target["answers"])
        predictions.append({"key": item.key, "answer": answer, "normalised": normalise_answer(answer),
                            "gold": item.target["answers"], "accuracy": acc})
        if item.target.get("type"):
            per_type[item.target["type"]].append(acc)
    total = sum(p["accuracy"] for p in predictions)
    metrics = {
        "accuracy": ratio(total, len(predictions)),
        "questions": len(predictions),
        "empty_answers": sum(not p["normalised"] for p in predictions),
    }
    details = {"per_type": {t: ratio(sum(v), len(v)) for t, v in sorted(per_type.items())}}
    return Scores(metrics, predictions, details)


@register
class TextVQA(VQA):
    kind = "textvqa"


@register
class VQAv2(VQA):
    kind = "vqav2"

    def __init__(self, path, max_new_tokens=None, annotations: str | None = None, image_dir: str | None = None,
                 image_pattern: str = "COCO_val2014_{image_id:012d}.jpg", **options):
        super().__init__(path, max_new_tokens, **options)
        self.annotations = Path(annotations) if annotations else None
        self.image_dir = Path(image_dir) if image_dir else None
        self.image_pattern = image_pattern

    def read_items(self) -> list[Item]:
        if self.path.suffix.lower() != ".json":
            return super().read_items()
        if self.annotations is None or self.image_dir is None:
            raise ValueError("vqav2 from the official JSON needs `annotations` and `image_dir` as well as `path`")
        questions = json.loads(self.path.read_text())["questions"]
        annotations = {a["question_id"]: a for a in json.loads(self.annotations.read_text())["annotations"]}
        items = []
        for q in questions:
            annotation = annotations.get(q["question_id"])
            if annotation is None:
                self.skipped["no annotation for the question"] += 1
                continue
            image = self.image_dir / self.image_pattern.format(image_id=q["image_id"])
            answers = [a["answer"] for a in annotation["answers"]]
            items.append(self.item(str(q["question_id"]), q["question"], [image], answers,
                                   annotation.get("answer_type", "")))
        return items
