"""TextVQA and VQAv2: open short answers scored by VQA accuracy against the human answers (see vqa_metric).

Files:
- VLMEvalKit's TSV (TextVQA_VAL.tsv; the same shape for VQAv2): index, question, answer (a list literal of the
  human answers), image; optional answer_type / question_type / category columns give breakdowns.
- VQAv2 also reads the official release: `path` = the questions JSON (v2_OpenEnded_mscoco_val2014_questions.json),
  `annotations` = the annotations JSON, `image_dir` = the COCO images, named by `image_pattern`.
Prompt: the question and the short-answer instruction; TextVQA gets no OCR tokens (as in both toolkits).

Modes (modes/vlmevalkit.py, modes/lmms_eval.py): TextVQA `vlmevalkit` (default) or `lmms_eval` (which also words
the question as lmms-eval does: str.capitalize(), the first letter upper case and every other letter lower case);
VQAv2 `lmms_eval`. They differ in the answer normalisation; both give a question with one human answer 0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, ClassVar

from ...rejection import Rejected
from ..modes import LMMS_EVAL, VLMEVALKIT, lmms_eval, vlmevalkit
from ..tsv import cell, parse_list
from .base import SHORT_ANSWER, Benchmark, Item, Scores, ratio, register


class VQA(Benchmark):
    default_max_new_tokens = 32
    prompt_template = "{question}\n" + SHORT_ANSWER
    accuracy_in: ClassVar[dict[str, Callable[[str, list[str]], float]]]  # mode -> (prediction, human answers) -> score

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer"], self._row_item)

    def _row_item(self, row: dict[str, str], images) -> Item:
        answers = [a for a in parse_list(cell(row, "answer")) if a] if cell(row, "answer") else []
        if not answers:
            raise Rejected("no human answers")
        breakdown = cell(row, "answer_type") or cell(row, "category")
        return self.item(cell(row, "index"), cell(row, "question"), images(), answers, breakdown)

    def item(self, key: str, question: str, images: list, answers: list[str], breakdown: str = "") -> Item:
        return Item(key, f"{self.question_text(question)}\n{SHORT_ANSWER}", images,
                    {"answers": answers, "type": breakdown})

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        accuracy = self.accuracy_in[self.mode]
        per_type: dict[str, list[float]] = defaultdict(list)
        predictions = []
        for item, answer in zip(items, answers, strict=True):
            acc = accuracy(answer, item.target["answers"])
            predictions.append({"key": item.key, "answer": answer, "gold": item.target["answers"], "accuracy": acc})
            if item.target.get("type"):
                per_type[item.target["type"]].append(acc)
        metrics = {
            "accuracy": ratio(sum(p["accuracy"] for p in predictions), len(predictions)),
            "questions": len(predictions),
            "empty_answers": sum(not a.strip() for a in answers),
        }
        details = {"per_type": {t: ratio(sum(v), len(v)) for t, v in sorted(per_type.items())}}
        return Scores(metrics, predictions, details)


@register
class TextVQA(VQA):
    kind = "textvqa"
    modes = (VLMEVALKIT, LMMS_EVAL)
    accuracy_in = {VLMEVALKIT: vlmevalkit.vqa_accuracy, LMMS_EVAL: lmms_eval.textvqa_accuracy}
    rewording = {LMMS_EVAL: (str.capitalize, "{question.capitalize()}\n" + SHORT_ANSWER)}


@register
class VQAv2(VQA):
    kind = "vqav2"
    modes = (LMMS_EVAL,)
    accuracy_in = {LMMS_EVAL: lmms_eval.vqav2_accuracy}

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
