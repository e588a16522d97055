"""COCO-style captioning: VLMEvalKit's COCO_VAL.tsv (index, image, answer = a list literal of the reference
captions). Scored with BLEU-4, ROUGE-L and CIDEr-D (see caption_metrics for tokenisation)."""

from __future__ import annotations

from ...rejection import Rejected
from ..caption_metrics import caption_scores, cider_d
from ..tsv import cell, parse_list
from .base import Benchmark, Item, Scores, register

CAPTION_PROMPT = "Describe this image in one sentence."


@register
class Captions(Benchmark):
    kind = "coco_caption"
    headline = "cider"
    default_max_new_tokens = 64
    prompt_template = CAPTION_PROMPT

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "answer"], self._item)

    @staticmethod
    def _item(row: dict[str, str], images) -> Item:
        references = [r for r in parse_list(cell(row, "answer")) if r] if cell(row, "answer") else []
        if not references:
            raise Rejected("no reference captions")
        found = images()
        if not found:
            raise Rejected("no image")
        return Item(cell(row, "index"), CAPTION_PROMPT, found, {"references": references})

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        return score_captions(items, answers)


def score_captions(items: list[Item], answers: list[str]) -> Scores:
    references = [item.target["references"] for item in items]
    if not items:
        return Scores({"bleu4": 0.0, "rougeL": 0.0, "cider": 0.0, "images": 0, "empty_answers": 0}, [])
    metrics = caption_scores(answers, references)
    _, per_image = cider_d(answers, references)
    predictions = [{"key": item.key, "answer": answer, "gold": item.target["references"], "cider": c}
                   for item, answer, c in zip(items, answers, per_image, strict=True)]
    metrics.update(images=len(items), empty_answers=sum(not a.strip() for a in answers))
    return Scores(metrics, predictions)
