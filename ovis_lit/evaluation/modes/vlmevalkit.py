"""VLMEvalKit's exact-matching rules (no LLM judge), reproduced from its behaviour at e8e78f0.

Multiple choice (`can_infer`: MMBench, MMStar, ScienceQA, AI2D, RealWorldQA, ...). `options` maps each option letter
whose cell is not missing to its text; the first step that decides wins:
1. a refusal sentence of VLMEvalKit's list anywhere in the answer: "Z" (a letter of no option: wrong);
2. the characters . ( ) [ ] , : ; ! * # { } become spaces and the answer is split on whitespace. When exactly one
   option letter is a token, it is the answer if its first occurrence is among the last four tokens ("B", "**B**",
   "Vitamin C." -> C, "I think A is right." -> A; "A is the answer to this question" is too early);
   when no option letter but a "Z" is a token, "Z";
3. "answer is X" / "correct answer is **X**" (any case: "the answer is a" -> A; X one of A-D and an option);
4. the answer, lowercased, is at most twice the options' total length and exactly one option's lowercased text is a
   substring of it ("dark blue" with options "blue" and "dark blue": two, so none);
5. otherwise nothing: wrong under exact matching.

Yes / no (`YOrN_Extraction`: MME, POPE, HallusionBench): lowercase, the VQA punctuation step, split on whitespace;
"yes" among the words and "no" not: yes; "no" and not "yes": no; otherwise unknown (wrong). So "**Yes**", "Y",
"Nope" and "There is not a dog." are unknown.

VQA (`process_line(method='vqa_score')`: TextVQA): newlines and tabs become spaces, trim, the punctuation step with
VLMEvalKit's period rule (a period next to a digit on either side stays: "2." stays "2.", not "2"), then number words,
articles and contractions; leave-one-out accuracy (vqa_metric).

VLMEvalKit stores predictions in a spreadsheet and reads them back with pandas, which turns an empty answer and the
answers "None", "NA", "null", "N/A", ... into NaN, scored as the text "nan": `as_stored` does the same.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..tsv import PANDAS_NA
from ..vqa_metric import digits_and_articles, leave_one_out, strip_punctuation

REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
API_FAILURE = "Failed to obtain answer via API"
TOKEN_BREAKS = ".()[],:;!*#{}"
ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
LAST_TOKENS = 5  # the letter's first occurrence must come after position len(tokens) - 5
COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")
PERIOD = re.compile(r"(?<!\d)\.(?!\d)")


class Choice(NamedTuple):
    letter: str | None  # an option letter, "Z" (refused: wrong), or None (nothing read: wrong)
    rule: str  # the step that decided, for the predictions file


def as_stored(answer: str) -> str:
    """The answer as VLMEvalKit's evaluation reads it back from its predictions file."""
    return "nan" if answer in PANDAS_NA else answer


def _option_letter(answer: str, options: dict[str, str]) -> Choice | None:
    if API_FAILURE in answer:
        return None
    if any(refusal in answer for refusal in REFUSALS):
        return Choice("Z", "refusal")
    tokens = answer.translate(str.maketrans(TOKEN_BREAKS, " " * len(TOKEN_BREAKS))).split()
    present = [letter for letter in options if letter in tokens]
    if len(present) == 1:
        if tokens.index(present[0]) > len(tokens) - LAST_TOKENS:
            return Choice(present[0], "option letter")
    elif not present and "Z" in tokens:
        return Choice("Z", "letter Z")
    match = ANSWER_IS.search(answer)
    if match and match.group(1).upper() in options:
        return Choice(match.group(1).upper(), "answer is")
    return None


def _option_text(answer: str, options: dict[str, str]) -> Choice | None:
    text = answer.lower()
    if len(text) > 2 * sum(len(v) for v in options.values()):
        return None
    found = [letter for letter, option in options.items() if option.lower() in text]
    return Choice(found[0], "option text") if len(found) == 1 else None


def extract_choice(answer: str, options: dict[str, str]) -> Choice:
    """`can_infer`: the option letter an answer picks (see the module docstring)."""
    answer = as_stored(answer)
    return _option_letter(answer, options) or _option_text(answer, options) or Choice(None, "no match")


def process_punctuation(text: str) -> str:
    return strip_punctuation(text, COMMA_NUMBER, PERIOD)


def extract_yes_no(answer: str) -> str | None:
    """`YOrN_Extraction`: 'yes', 'no' or None (unknown)."""
    words = process_punctuation(as_stored(answer).lower()).split()
    if "yes" in words and "no" not in words:
        return "yes"
    if "no" in words and "yes" not in words:
        return "no"
    return None


def normalise_vqa(text: str) -> str:
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return digits_and_articles(process_punctuation(text))


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    return leave_one_out(normalise_vqa(as_stored(prediction)), [normalise_vqa(a) for a in human_answers])
