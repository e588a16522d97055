"""COCO-style captioning: VLMEvalKit's COCO_VAL.tsv (index, image, answer = a list literal of the reference
captions). Scored by pycocoevalcap (BLEU-1..4, METEOR where Java exists, ROUGE-L, CIDEr-D; see caption_metrics).

Options: `tokenizer` auto | ptb | ptb_like (auto: PTB through Java when `java` is on PATH, else the Python
imitation), `meteor` auto | true | false (auto: when Java exists; the config's default, the class's is false).
The summary's details say which were used."""

from __future__ import annotations

from ..caption_metrics import TOKENIZERS, caption_scores
from ..tsv import BadSample, cell, parse_list
from .base import Benchmark, Item, Scores, register

CAPTION_PROMPT = "Describe this image in one sentence."
CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider")


@register
class Captions(Benchmark):
    kind = "coco_caption"
    headline = "cider"
    default_max_new_tokens = 64
    prompt_template = CAPTION_PROMPT

    # METEOR off unless asked for (conf/benchmark/coco_caption.yaml asks: auto): its Java process takes ~20 s to start
    def __init__(self, path, max_new_tokens=None, tokenizer: str = "auto", meteor: str | bool = False, **options):
        super().__init__(path, max_new_tokens, **options)
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"coco_caption: tokenizer {tokenizer!r} is not one of {TOKENIZERS}")
        if meteor not in ("auto", True, False):
            raise ValueError(f"coco_caption: meteor {meteor!r} is not one of auto, true, false")
        self.tokenizer, self.meteor = tokenizer, meteor

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "answer"], self._item)

    @staticmethod
    def _item(row: dict[str, str], images) -> Item:
        references = [r for r in parse_list(cell(row, "answer")) if r] if cell(row, "answer") else []
        if not references:
            raise BadSample("no reference captions")
        found = images()
        if not found:
            raise BadSample("no image")
        return Item(cell(row, "index"), CAPTION_PROMPT, found, {"references": references})

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        return score_captions(items, answers, self.tokenizer, self.meteor)

    def describe(self) -> dict:
        return {**super().describe(), "tokenizer": self.tokenizer, "meteor": self.meteor}


def score_captions(items: list[Item], answers: list[str], tokenizer: str = "auto",
                   meteor: str | bool = "auto") -> Scores:
    references = [item.target["references"] for item in items]
    corpus, per_image, info = caption_scores(answers, references, tokenizer, meteor)
    if not items:
        corpus = {m: 0.0 for m in CAPTION_METRICS if m != "meteor" or info["meteor"]}
    predictions = [{"key": item.key, "answer": answer, "gold": item.target["references"], **scores}
                   for item, answer, scores in zip(items, answers, per_image, strict=True)]
    metrics = {**corpus, "images": len(items), "empty_answers": sum(not a.strip() for a in answers)}
    return Scores(metrics, predictions, {"caption_metrics": info})
