"""OCRBench (v1): 1000 questions in 10 categories, scored as VLMEvalKit scores it (mode `vlmevalkit`, the only one).

File: VLMEvalKit's OCRBench.tsv: index, image, question, answer (a list literal of accepted answers), category.
Prompt: the question as it is (VLMEvalKit adds nothing for this benchmark).
A question is right when one accepted answer is a substring of the prediction, compared
- for "Handwritten Mathematical Expression Recognition" (HME100k, LaTeX): case kept, every space and newline removed
  from both sides (so `\\frac { a } { b }` matches `\\frac{a}{b}`);
- for every other category: both lowercased, ends stripped, newlines turned into spaces;
the prediction first read as VLMEvalKit reads it back from its predictions file (modes/vlmevalkit.py: `as_stored`:
an empty answer, "None", "N/A", ... are the text "nan").
Scores are counts of right questions: the six recognition categories add up to "Text Recognition"; the final score
is the sum over the ten categories (out of 1000 on the full file), `final_score_norm` that divided by 10.
A category outside the ten (VLMEvalKit stops on one) is scored and listed under `other_categories` but is not
part of the final score.
"""

from __future__ import annotations

from collections import Counter

from ...rejection import Rejected
from ..modes.vlmevalkit import as_stored
from ..tsv import cell, parse_list
from .base import Benchmark, Item, Scores, ratio, register

HME = "Handwritten Mathematical Expression Recognition"
TEXT_RECOGNITION = ("Regular Text Recognition", "Irregular Text Recognition", "Artistic Text Recognition",
                    "Handwriting Recognition", "Digit String Recognition", "Non-Semantic Text Recognition")
# summary metric -> the categories it adds up
GROUPS = {
    "text_recognition": TEXT_RECOGNITION,
    "scene_text_vqa": ("Scene Text-centric VQA",),
    "doc_vqa": ("Doc-oriented VQA",),
    "key_information_extraction": ("Key Information Extraction",),
    "hme": (HME,),
}
CATEGORIES = frozenset(c for group in GROUPS.values() for c in group)


def ocrbench_hit(prediction: str, answers: list[str], category: str) -> bool:
    """Whether one accepted answer occurs in the prediction, under the category's comparison. The prediction is read
    as VLMEvalKit reads it back from its predictions file: '', 'None', 'N/A', ... are the text 'nan' there (so an
    empty answer matches an accepted answer 'a', and 'None' does not match 'none')."""
    if category == HME:
        def squeeze(text: str) -> str:
            return text.strip().replace("\n", " ").replace(" ", "")
    else:
        def squeeze(text: str) -> str:
            return text.lower().strip().replace("\n", " ")
    predicted = squeeze(as_stored(prediction))
    return any(squeeze(answer) in predicted for answer in answers)


@register
class OCRBench(Benchmark):
    kind = "ocrbench"
    headline = "final_score"
    default_max_new_tokens = 128
    prompt_template = "{question}"
    modes = ("vlmevalkit",)

    def __init__(self, path, max_new_tokens=None, mode: str = "vlmevalkit", **options):
        super().__init__(path, max_new_tokens, **options)
        if mode not in self.modes:
            raise ValueError(f"{self.kind}: mode {mode!r} is not one of {self.modes}")
        self.mode = mode

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer", "category"], self._item)

    @staticmethod
    def _item(row: dict[str, str], images) -> Item:
        if not cell(row, "answer"):
            raise Rejected("no answers")
        if not cell(row, "question"):
            raise Rejected("empty question")
        answers = parse_list(cell(row, "answer"))
        # the category is matched exactly, as the toolkit matches it (only surrounding blanks are cut by `cell`)
        target = {"answers": answers, "category": cell(row, "category")}
        return Item(cell(row, "index"), cell(row, "question"), images(), target)

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        return score_ocrbench(items, answers)

    def describe(self) -> dict:
        return {**super().describe(), "mode": self.mode}


def score_ocrbench(items: list[Item], answers: list[str]) -> Scores:
    right: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    predictions = []
    for item, answer in zip(items, answers, strict=True):
        category = item.target["category"]
        hit = ocrbench_hit(answer, item.target["answers"], category)
        asked[category] += 1
        right[category] += hit
        predictions.append({"key": item.key, "answer": answer, "gold": item.target["answers"],
                            "category": category, "correct": hit})
    metrics: dict[str, float] = {name: sum(right[c] for c in group) for name, group in GROUPS.items()}
    metrics["final_score"] = sum(metrics[name] for name in GROUPS)
    metrics["final_score_norm"] = metrics["final_score"] / 10
    metrics["accuracy"] = ratio(sum(p["correct"] for p in predictions), len(predictions))
    metrics["questions"] = len(predictions)
    metrics["empty_answers"] = sum(not a.strip() for a in answers)
    details = {
        "per_category": {c: {"right": right[c], "questions": asked[c]} for c in sorted(asked)},
        # a subset (limit=...) or a partial file cannot reach 1000: this is what it could reach
        "final_score_max": sum(asked[c] for c in CATEGORIES),
        "other_categories": sorted(c for c in asked if c not in CATEGORIES),
    }
    return Scores(metrics, predictions, details)
