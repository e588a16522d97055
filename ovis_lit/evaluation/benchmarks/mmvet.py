"""MM-Vet: open answers graded 0.0-1.0 by an LLM judge, as VLMEvalKit grades them (mode `vlmevalkit`).

File: VLMEvalKit's MMVet.tsv: index, image, question, answer (`<AND>` / `<OR>` join parts), category (the
capabilities the question needs, comma-joined: "rec,ocr,math").
Prompt: the question as it is. Grading (judge_prompts.MMVET_GRADER_V1): the judge fills in the correctness cell for
(question, ground truth with spaces around <AND>/<OR>, prediction). Its reply must be a number in [0, 1] (Python's
float() of the whole reply); otherwise it is asked again at temperature 0.5, 1.0, 1.5, 2.0 (5 tries in all), and
after 5 failures the question scores 0.0 (every try is logged in the prediction).
Scores (percent): `overall` = the mean grade; per capability (rec, ocr, know, gen, spat, math: the questions whose
category contains it, as a substring, as the toolkit tests it) and per exact capability combination.
"""

from __future__ import annotations

from collections import defaultdict

from ...rejection import Rejected
from ..judge_prompts import MMVET_GRADER_V1
from ..tsv import cell
from .base import Item, Scores, ratio, register
from .judged import JUDGE_RETRIES, JudgedBenchmark

CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")


def parse_grade(reply: str) -> float | None:
    """The grade a reply gives, or None: the reply must be one number in [0, 1] (NaN fails the range test here;
    VLMEvalKit's test, "not below 0 nor above 1", lets it through)."""
    try:
        grade = float(reply)
    except ValueError:
        return None
    return grade if 0.0 <= grade <= 1.0 else None


@register
class MMVet(JudgedBenchmark):
    kind = "mmvet"
    headline = "overall"
    default_max_new_tokens = 512
    judge_prompt = MMVET_GRADER_V1
    default_judge_max_new_tokens = 16  # a grade is a few tokens; a longer reply would not parse anyway

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer", "category"], self._item)

    def _item(self, row: dict[str, str], images) -> Item:
        if not cell(row, "question"):
            raise Rejected("empty question")
        if not cell(row, "answer"):
            raise Rejected("no ground truth")
        return self.question_item(row, images, {"answer": cell(row, "answer"), "category": cell(row, "category")})

    def grade(self, item: Item, prediction: str) -> tuple[float, list[str]]:
        """(grade, the judge's replies)."""
        truth = item.target["answer"].replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
        prompt = self.prompt.render(question=item.prompt, answer=truth, prediction=prediction)
        replies = []
        for attempt in range(JUDGE_RETRIES):
            replies.append(self.ask(prompt, temperature=attempt * 0.5))
            grade = parse_grade(replies[-1])
            if grade is not None:
                return grade, replies
        return 0.0, replies

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        total: dict[str, list[float]] = defaultdict(list)
        combos: dict[str, list[float]] = defaultdict(list)
        predictions = []
        for item, answer in zip(items, answers, strict=True):
            grade, replies = self.grade(item, answer)
            category = item.target["category"]
            total["overall"].append(grade)
            for capability in CAPABILITIES:
                if capability in category:
                    total[capability].append(grade)
            combos[category.replace(",", "_")].append(grade)
            predictions.append({"key": item.key, "answer": answer, "gold": item.target["answer"],
                                "category": category, "grade": grade, "judge_replies": replies,
                                "judge_failed": parse_grade(replies[-1]) is None})
        percent = {k: 100 * ratio(sum(v), len(v)) for k, v in total.items()}
        metrics = {"overall": percent.get("overall", 0.0),
                   **{c: percent[c] for c in CAPABILITIES if c in percent},
                   "questions": len(predictions),
                   "judge_failures": sum(p["judge_failed"] for p in predictions),
                   "empty_answers": sum(not a.strip() for a in answers)}
        details = {"per_capability": {c: {"score": percent.get(c, 0.0), "questions": len(total[c])}
                                      for c in CAPABILITIES},
                   "per_combination": {k: {"score": 100 * ratio(sum(v), len(v)), "questions": len(v)}
                                       for k, v in sorted(combos.items())},
                   "judge": self.judge_record()}
        return Scores(metrics, predictions, details)
