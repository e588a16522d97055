"""POPE: yes/no object-hallucination questions, reported per negative-sampling split.

VLMEvalKit's POPE.tsv stores a question once and lists its splits in `category` ("random,popular"); each row is
scored once per listed split (a row without a category counts under "all"), as both toolkits see the data (lmms-eval's
copy has one row per split). "overall" pools every (row, split). 'yes' is the positive class.

Modes:
- `vlmevalkit` (default): answers read by YOrN_Extraction; an unknown answer is wrong and counts as not-yes for
  precision and recall; yes_ratio (not reported by VLMEvalKit) is the share of answers read as yes;
- `lmms_eval`: the answer must be exactly "yes" or "no" (case and outer spaces aside); precision, recall and
  yes_ratio as lmms-eval computes them (modes/lmms_eval.py: its yes_ratio is the gold answers' ratio, a known bug).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torchmetrics.functional.classification import binary_f1_score, binary_precision, binary_recall

from ..modes import LMMS_EVAL, VLMEVALKIT, lmms_eval, vlmevalkit
from .base import Item, Scores, ratio, register
from .yesno import YesNo


def vlmevalkit_report(predictions: list[dict]) -> dict[str, float]:
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


def lmms_eval_report(predictions: list[dict]) -> dict[str, float]:
    return lmms_eval.pope_report([p["extracted"] for p in predictions], [p["gold"] for p in predictions])


@register
class POPE(YesNo):
    kind = "pope"
    headline = "f1"
    readers = {VLMEVALKIT: vlmevalkit.extract_yes_no, LMMS_EVAL: lmms_eval.pope_yes_no}

    def rate(self, items: list[Item], predictions: list[dict]) -> Scores:
        report = lmms_eval_report if self.mode == LMMS_EVAL else vlmevalkit_report
        splits: dict[str, list[dict]] = defaultdict(list)
        for item, p in zip(items, predictions):
            names = [s.strip() for s in (item.target["category"] or "all").split(",") if s.strip()] or ["all"]
            p["splits"] = names
            for name in names:
                splits[name].append(p)
        overall = report([p for name in sorted(splits) for p in splits[name]])
        per_split = {name: report(splits[name]) for name in sorted(splits)}
        metrics = {**overall, "failed_extractions": sum(p["extracted"] is None for p in predictions)}
        for name, split_report in per_split.items():
            metrics[f"{name}/f1"] = split_report["f1"]
            metrics[f"{name}/accuracy"] = split_report["accuracy"]
        return Scores(metrics, predictions, {"per_split": per_split})
