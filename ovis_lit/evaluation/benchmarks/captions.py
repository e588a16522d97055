"""COCO-style captioning: VLMEvalKit's COCO_VAL.tsv (index, image, answer = a list literal of the reference
captions). Scored by pycocoevalcap (BLEU-1..4, METEOR where Java exists, ROUGE-L, CIDEr-D; see caption_metrics).

Modes: `coco` (the default: COCO's caption evaluation, PTB tokens, scores in [0, 1] as pycocoevalcap gives them)
and `vlmevalkit` (VLMEvalKit's COCO_VAL: its prompt, or the row's `question` when the file has one; captions scored
as they are, untokenised; BLEU-1..4, ROUGE-L, CIDEr only; every score times 100).
Options (mode coco): `tokenizer` auto | ptb | ptb_like (auto: PTB through Java when `java` is on PATH, else the Python
imitation), `meteor` auto | true | false (auto: when Java exists; the config's default, the class's is false).
The summary's details say which were used."""

from __future__ import annotations

from ...rejection import Rejected
from ..caption_metrics import TOKENIZERS, caption_scores
from ..tsv import cell, parse_list
from .base import Benchmark, Item, Scores, register

CAPTION_PROMPT = "Describe this image in one sentence."
# VLMEvalKit's default question for COCO_VAL rows without one
VLMEVALKIT_CAPTION_PROMPT = ("Please describe this image in general. Directly provide the description, "
                             'do not include prefix like "This image depicts". ')
CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider")


@register
class Captions(Benchmark):
    kind = "coco_caption"
    headline = "cider"
    default_max_new_tokens = 64
    prompt_template = CAPTION_PROMPT

    modes = ("coco", "vlmevalkit")

    # METEOR off unless asked for (conf/benchmark/coco_caption.yaml asks: auto): its Java process takes ~20 s to start
    def __init__(self, path, max_new_tokens=None, tokenizer: str = "auto", meteor: str | bool = False,
                 mode: str = "coco", **options):
        super().__init__(path, max_new_tokens, **options)
        if mode not in self.modes:
            raise ValueError(f"coco_caption: mode {mode!r} is not one of {self.modes}")
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"coco_caption: tokenizer {tokenizer!r} is not one of {TOKENIZERS}")
        if meteor not in ("auto", True, False):
            raise ValueError(f"coco_caption: meteor {meteor!r} is not one of auto, true, false")
        self.mode = mode
        if mode == "vlmevalkit":
            tokenizer, meteor = "none", False
            self.prompt_template = f"{{question}} (when the row has one, else) {VLMEVALKIT_CAPTION_PROMPT}"
        self.tokenizer, self.meteor = tokenizer, meteor

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "answer"], self._item)

    def _item(self, row: dict[str, str], images) -> Item:
        references = [r for r in parse_list(cell(row, "answer")) if r] if cell(row, "answer") else []
        if not references:
            raise Rejected("no reference captions")
        found = images()
        if not found:
            raise Rejected("no image")
        prompt = CAPTION_PROMPT
        if self.mode == "vlmevalkit":
            prompt = cell(row, "question") or VLMEVALKIT_CAPTION_PROMPT
        return Item(cell(row, "index"), prompt, found, {"references": references})

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        scores = score_captions(items, answers, self.tokenizer, self.meteor)
        if self.mode == "vlmevalkit":  # VLMEvalKit reports every caption score times 100
            scores.metrics.update({k: 100 * v for k, v in scores.metrics.items() if k in CAPTION_METRICS})
            scores.details["caption_metrics"]["scale"] = 100
        return scores

    def describe(self) -> dict:
        return {**super().describe(), "mode": self.mode, "tokenizer": self.tokenizer, "meteor": self.meteor}


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
