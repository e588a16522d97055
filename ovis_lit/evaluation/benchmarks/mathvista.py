"""MathVista (testmini): the answer is extracted from the response, by rule when it can be, else by an LLM judge,
then compared by type, as VLMEvalKit does it (mode `vlmevalkit`).

File: VLMEvalKit's MathVista_MINI.tsv: index, image, question (hint, question and choices as one text), answer,
question_type (multi_choice | free_form), answer_type (text | integer | float | list), choices (a list literal),
answer_option (the right letter), task, skills (a list literal).
Prompt: the question as it is.
Per question, with `check(response)` = for multi_choice, the option letter read from the response (the choice
extractor of the vlmevalkit mode, VLMEvalKit's can_infer) equals answer_option; for integer and float,
int() / float() of the response equals that of the answer; for any other answer type, never (VLMEvalKit compares
the string "None" with the answer there, so free-form text and list answers always score 0: kept, to give its
numbers, see evals/README.md).
1. prefetch: a multiple-choice response from which a letter is read, or a number response that is already right,
   is taken as the extraction without asking the judge ("prefetched"; a number 0 is not, as in the toolkit);
2. otherwise the judge extracts (judge_prompts.MATHVISTA_EXTRACT_V1, greedy);
3. the question is right when `check(extraction)` holds.
Scores (percent): `accuracy` overall, per task and per skill; `prefetch_rate`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ...rejection import Rejected
from ..judge_prompts import MATHVISTA_EXTRACT_V1
from ..modes.vlmevalkit import extract_choice
from ..tsv import cell, parse_list
from .base import Item, Scores, ratio, register
from .judged import JudgedBenchmark


def infer_option(response: Any, choices: list[str]) -> str | None:
    options = {chr(ord("A") + k): choice for k, choice in enumerate(choices)}
    return extract_choice(str(response), options).letter


def parsed(response: Any, answer: str, answer_type: str) -> tuple[Any, Any]:
    """(response, answer) as the toolkit compares them: converted by the answer type; a response that does not
    convert becomes None (never equal), an answer that does not convert stays text (never equal to a number)."""
    convert = {"integer": int, "float": float}.get(answer_type)
    if convert is None:
        return "None", answer  # the toolkit's comparison for text / list answers (see the module doc)
    try:
        response = convert(response)
    except (ValueError, TypeError):
        return None, answer
    try:
        return response, convert(answer)
    except (ValueError, TypeError):
        return response, answer


def is_right(response: Any, target: dict[str, Any]) -> bool:
    if target["question_type"] == "multi_choice":
        return infer_option(response, target["choices"]) == target["answer_option"]
    got, want = parsed(response, target["answer"], target["answer_type"])
    return got == want


def prefetch(response: str, target: dict[str, Any]) -> Any:
    """The extraction taken without the judge, or None (also for a falsy one, as the toolkit's truth test does)."""
    if target["question_type"] == "multi_choice":
        return infer_option(response, target["choices"]) or None
    got, want = parsed(response, target["answer"], target["answer_type"])
    return got if got == want and got else None


@register
class MathVista(JudgedBenchmark):
    kind = "mathvista"
    headline = "accuracy"
    default_max_new_tokens = 512
    judge_prompt = MATHVISTA_EXTRACT_V1
    default_judge_max_new_tokens = 128  # VLMEvalKit's judge max_tokens

    def read_items(self) -> list[Item]:
        return self.items_from_tsv(["index", "question", "answer", "question_type", "answer_type"], self._item)

    def _item(self, row: dict[str, str], images) -> Item:
        if not cell(row, "question"):
            raise Rejected("empty question")
        question_type = cell(row, "question_type")
        if question_type not in ("multi_choice", "free_form"):
            raise Rejected("question_type is not multi_choice or free_form")
        choices = parse_list(cell(row, "choices")) if cell(row, "choices") else []
        if question_type == "multi_choice" and not (choices and cell(row, "answer_option")):
            raise Rejected("multiple choice without choices or answer_option")
        skills = parse_list(cell(row, "skills")) if cell(row, "skills") else []
        target = {"answer": cell(row, "answer"), "question_type": question_type,
                  "answer_type": cell(row, "answer_type"), "choices": choices,
                  "answer_option": cell(row, "answer_option"), "task": cell(row, "task"), "skills": skills}
        return self.question_item(row, images, target)

    def score(self, items: list[Item], answers: list[str]) -> Scores:
        asked: dict[str, int] = defaultdict(int)
        right: dict[str, int] = defaultdict(int)
        fetched: dict[str, int] = defaultdict(int)
        predictions = []
        for item, answer in zip(items, answers, strict=True):
            target = item.target
            extraction = prefetch(answer, target)
            by_rule = extraction is not None
            if not by_rule:
                extraction = self.ask(self.prompt.render(question=item.prompt, prediction=answer), temperature=0.0)
            correct = is_right(extraction, target)
            groups = ["overall", *([target["task"]] if target["task"] else []), *target["skills"]]
            for group in groups:
                asked[group] += 1
                right[group] += correct
                fetched[group] += by_rule
            predictions.append({"key": item.key, "answer": answer, "gold": target["answer_option"] or target["answer"],
                                "extracted": str(extraction), "prefetched": by_rule, "correct": correct})
        metrics = {"accuracy": 100 * ratio(right["overall"], asked["overall"]),
                   "prefetch_rate": 100 * ratio(fetched["overall"], asked["overall"]),
                   "questions": len(predictions),
                   "judge_calls": sum(not p["prefetched"] for p in predictions),
                   "empty_answers": sum(not a.strip() for a in answers)}
        details = {"per_group": {g: {"accuracy": 100 * ratio(right[g], asked[g]), "questions": asked[g],
                                     "prefetch_rate": 100 * ratio(fetched[g], asked[g])}
                                 for g in asked if g != "overall"},
                   "judge": self.judge_record()}
        return Scores(metrics, predictions, details)
