"""POPE: yes/no object-hallucination questions, reported per negative-sampling split.

VLMEvalKit's POPE.tsv stores a question once and lists its splits in `category` ("random,popular"); each row is
scored once per listed split (a row without a category counts under "all"). "overall" pools every (row, split).
'yes' is the positive class. An answer that is neither yes nor no is wrong, counts as not-yes for precision and
recall, and is counted in failed_extractions.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torchmetrics.functional.classification import binary_f1_score, binary_precision, binary_recall

from .base import Item, Scores, ratio, register
from .yesno import YesNo, judged


@register
class POPE(YesNo):
    kind = "pope"
    headline = "f1"

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        return score_pope(items, answers)


def binary_report(predictions: list[dict]) -> dict[str, float]:
    if not predictions:
        return {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0, "questions": 0}
    said_yes = torch.tensor([p["extracted"] == "yes" for p in predictions], dtype=torch.long)
    gold_yes = torch.tensor([p["gold"] == "yes" for p in predictions], dtype=torch.long)
    return {
        # accuracy by hand: an unparsed answer is wrong even when the gold answer is 'no'
        "accuracy": ratio(sum(p["correct"] for p in predictions), len(predictions)),
        "precision": float(binary_precision(said_yes, gold_yes)),
        "recall": float(binary_recall(said_yes, gold_yes)),
        "f1": float(binary_f1_score(said_yes, gold_yes)),
        "yes_ratio": ratio(int(said_yes.sum()), len(predictions)),
        "questions": len(predictions),
    }


def score_pope(items: list[Item], answers: list[str]) -> Scores:
    predictions = judged(items, answers)
    splits: dict[str, list[dict]] = defaultdict(list)
    for item, p in zip(items, predictions):
        names = [s.strip() for s in (item.target["category"] or "all").split(",") if s.strip()] or ["all"]
        p["splits"] = names
        for name in names:
            splits[name].append(p)
    overall = binary_report([p for name in sorted(splits) for p in splits[name]])
    per_split = {name: binary_report(splits[name]) for name in sorted(splits)}
    metrics = {**overall, "failed_extractions": sum(p["extracted"] is None for p in predictions)}
    for name, report in per_split.items():
        metrics[f"{name}/f1"] = report["f1"]
        metrics[f"{name}/accuracy"] = report["accuracy"]
    return Scores(metrics, predictions, {"per_split": per_split})
