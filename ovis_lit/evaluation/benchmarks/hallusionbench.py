"""HallusionBench in VLMEvalKit's layout (HallusionBench.tsv): yes/no questions about figures, charts, maps, tables
and illusions, some asked of an edited copy of the figure.

Columns: index, question, answer (Yes/No), category (VD: visual dependent, VS: visual supplement), l2-category (the
subcategory: chart, figure, illusion, map, math, ocr, table, video), image. The index names the question:
`{category}_{subcategory}_{visual input}_{set}_{figure}_{question}`, so its 4th, 5th and 6th '_'-separated fields
are the set, figure and question ids (a row whose index has fewer fields is skipped: it cannot be grouped).
Prompt: Ovis's VLMEvalKit prompt, `{question} Please answer yes or no.` and the short-answer instruction.

Metrics, as VLMEvalKit's Hallusion_rating (vlmevalkit mode only; answers read by YOrN_Extraction), in percent:
- aAcc: questions right;
- fAcc: figures with every question about them right (grouped by l2-category, set and figure);
- qAcc: questions right on every figure they were asked about (grouped by l2-category, set and question);
each overall, per category (VD / VS) and per l2-category.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ...rejection import Rejected
from ..modes import VLMEVALKIT
from ..tsv import cell
from .base import SHORT_ANSWER, Item, Scores, register
from .mme import YES_NO_REQUEST
from .yesno import YesNo


def _percent(values: list[bool]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def hallusion_rates(rows: list[tuple[dict[str, Any], bool]]) -> dict[str, float]:
    """aAcc, fAcc, qAcc of (target, correct) pairs."""
    figures: dict[tuple, list[bool]] = defaultdict(list)
    questions: dict[tuple, list[bool]] = defaultdict(list)
    for target, correct in rows:
        figures[target["l2_category"], target["set_id"], target["figure_id"]].append(correct)
        questions[target["l2_category"], target["set_id"], target["question_id"]].append(correct)
    return {
        "aAcc": _percent([correct for _, correct in rows]),
        "fAcc": _percent([all(v) for v in figures.values()]),
        "qAcc": _percent([all(v) for v in questions.values()]),
        "questions": len(rows),
    }


@register
class HallusionBench(YesNo):
    kind = "hallusionbench"
    headline = "aAcc"
    modes = (VLMEVALKIT,)
    # Ovis's VLMEvalKit prompt for HallusionBench asks for yes / no before the short-answer instruction
    rewording = {VLMEVALKIT: (lambda question: question + YES_NO_REQUEST,
                              "{question} Please answer yes or no.\n" + SHORT_ANSWER)}

    def more_target(self, row: dict[str, str]) -> dict[str, Any]:
        fields = cell(row, "index").split("_")
        if len(fields) < 6:
            raise Rejected("index is not category_subcategory_visual_set_figure_question")
        return {"l2_category": cell(row, "l2-category"), "set_id": fields[3], "figure_id": fields[4],
                "question_id": fields[5]}

    def rate(self, items: list[Item], predictions: list[dict]) -> Scores:
        rows = [(item.target, p["correct"]) for item, p in zip(items, predictions)]
        metrics = hallusion_rates(rows)
        metrics["failed_extractions"] = sum(p["extracted"] is None for p in predictions)
        details: dict[str, dict[str, dict[str, float]]] = {"per_category": {}, "per_l2_category": {}}
        for field, breakdown in (("category", "per_category"), ("l2_category", "per_l2_category")):
            for name in sorted({t[field] for t, _ in rows if t[field]}):
                details[breakdown][name] = hallusion_rates([(t, c) for t, c in rows if t[field] == name])
        return Scores(metrics, predictions, details)
