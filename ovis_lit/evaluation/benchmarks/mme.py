"""MME: yes/no questions in pairs (one 'yes' and one 'no' question per image), 14 subtasks.

VLMEvalKit's MME.tsv: index, image (or the index of the row holding it), question, answer, category, image_path.
The questions of an image are those sharing `image_path` (else the row holding the image) within a category.
Per category: acc (questions right) and acc+ (images with all their questions right); the category's score is
acc*100 + acc+*100 (max 200). Perception sums the 10 perception categories (max 2000), cognition the 4 cognition
ones (max 800); a category absent from the file adds nothing (`categories_present` says how many were there).
Both toolkits expect exactly two questions per image (lmms-eval asserts it, VLMEvalKit multiplies the first two);
for such files the two ways of counting agree, and images with another count are reported in `unpaired_images`.

Modes: `vlmevalkit` (default) reads answers with YOrN_Extraction; `lmms_eval` with its MME prefix rule, and words the
prompt as lmms-eval does: the question's " Please answer yes or no." is removed before the short-answer instruction.
"""

from __future__ import annotations

from collections import defaultdict

from ..modes import LMMS_EVAL, VLMEVALKIT, lmms_eval, vlmevalkit
from .base import SHORT_ANSWER, Item, Scores, ratio, register
from .yesno import YesNo

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "ocr")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
YES_NO_REQUEST = " Please answer yes or no."


def category_id(name: str) -> str:
    """'OCR', 'Commonsense Reasoning' and 'commonsense_reasoning' name the same category."""
    return name.strip().lower().replace(" ", "_")


@register
class MME(YesNo):
    kind = "mme"
    headline = "perception"
    readers = {VLMEVALKIT: vlmevalkit.extract_yes_no, LMMS_EVAL: lmms_eval.mme_yes_no}
    rewording = {LMMS_EVAL: (lambda question: question.replace(YES_NO_REQUEST, ""),
                             "{question, without ' Please answer yes or no.'}\n" + SHORT_ANSWER)}

    def rate(self, items: list[Item], predictions: list[dict]) -> Scores:
        questions: dict[str, list[bool]] = defaultdict(list)
        images: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for item, p in zip(items, predictions):
            category = item.target["category"] or "unknown"
            questions[category].append(p["correct"])
            images[category][item.target["image"]].append(p["correct"])
        per_category = {}
        for category in sorted(questions):
            acc = ratio(sum(questions[category]), len(questions[category]))
            acc_plus = ratio(sum(all(v) for v in images[category].values()), len(images[category]))
            per_category[category] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * acc + 100 * acc_plus,
                                      "questions": len(questions[category]), "images": len(images[category])}
        by_id = {category_id(c): v for c, v in per_category.items()}
        metrics = {
            "perception": sum(by_id[c]["score"] for c in PERCEPTION if c in by_id),
            "cognition": sum(by_id[c]["score"] for c in COGNITION if c in by_id),
            "accuracy": ratio(sum(p["correct"] for p in predictions), len(predictions)),
            "questions": len(predictions),
            "failed_extractions": sum(p["extracted"] is None for p in predictions),
        }
        details = {
            "per_category": per_category,
            "categories_present": {"perception": sum(c in by_id for c in PERCEPTION),
                                   "cognition": sum(c in by_id for c in COGNITION)},
            "other_categories": sorted(c for c in per_category if category_id(c) not in PERCEPTION + COGNITION),
            "unpaired_images": sum(len(v) != 2 for per in images.values() for v in per.values()),
        }
        return Scores(metrics, predictions, details)
