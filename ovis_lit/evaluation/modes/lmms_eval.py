"""lmms-eval's scoring rules (the package 0.7.3), reproduced from its behaviour, quirks included.

MME (`parse_pred_ans`): lowercase, trim, delete every period; exactly "yes" / "no"; a one-character answer "y" / "n";
otherwise "yes" or "no" inside the first four characters (so "Nope" is no, "not sure" is no, "**Yes**" is other);
else other (wrong).

POPE: the lowercased, trimmed answer must equal "yes" or "no" ("Yes." is neither). Precision counts a false positive
only for the answer "yes", recall a false negative only for the answer "no": an unreadable answer to a "yes" question
lowers accuracy but not recall. yes_ratio is the share of "yes" among the GOLD answers, not the predictions (a known
lmms-eval bug, kept in this mode: it is 0.5 on the balanced POPE splits whatever the model says).

VQA (EvalAI answer processor): TextVQA passes the prediction and every human answer through the whole processor
(lowercase; "," and "?" deleted; "'s" -> " 's"; then the punctuation step, number words, articles, contractions);
VQAv2 only through the punctuation step and number words / articles / contractions. The period rule deletes every
period not followed by a digit ("2." -> "2"). Leave-one-out accuracy (vqa_metric).

MMMU (the official MMMU parser that lmms-eval carries):
- multiple choice: strip , . ! ? ; : ' from the ends, pad with spaces; candidates are the letters written "(X)";
  else "X " ; else "X."; else, when the answer has more than five words, the options whose text it contains. Several
  candidates: the one whose last occurrence comes last. None: a random letter (random.choice with a seeded
  generator, drawn in item order; lmms-eval seeds Python's random with 0 at start-up);
- open: the answer is cut into lines; in each, the text after the last of "could be ", "so ", "is ", "thus ",
  "therefore ", "final ", "answer ", "result " (and "=" in the last line) is kept, the shortest such tail per line;
  numbers are extracted from those tails; everything is normalised (a number -> float rounded to 2 places, text ->
  lowercase, one character padded with a space); the answer is right when a normalised number equals the gold number,
  or the normalised gold text is a substring of a text candidate. The gold answer is the text as written: a list
  literal is not parsed, "50%" is text, so "50" does not match it.
"""

from __future__ import annotations

import random
import re

from ..vqa_metric import digits_and_articles, leave_one_out, strip_punctuation

COMMA_NUMBER = re.compile(r"(?<=\d)(\,)+(?=\d)")
PERIOD = re.compile(r"\.(?!\d)")  # lmms-eval writes (?!<=\d)(\.)(?!\d): its first group asserts nothing


# ------------------------------------------------------------------------------------------------- yes / no


def mme_yes_no(answer: str) -> str | None:
    text = answer.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text)
    if "yes" in text[:4]:
        return "yes"
    if "no" in text[:4]:
        return "no"
    return None


def pope_yes_no(answer: str) -> str | None:
    text = answer.lower().strip()
    return text if text in ("yes", "no") else None


def pope_report(said: list[str | None], gold: list[str]) -> dict[str, float]:
    """lmms-eval's five POPE aggregates over (answer read, gold) pairs."""
    n = len(gold)
    true_pos = sum(s == "yes" and g == "yes" for s, g in zip(said, gold))
    false_pos = sum(s == "yes" and g == "no" for s, g in zip(said, gold))
    false_neg = sum(s == "no" and g == "yes" for s, g in zip(said, gold))
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 0.0
    return {
        "accuracy": sum(s == g for s, g in zip(said, gold)) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": sum(g == "yes" for g in gold) / n if n else 0.0,  # the gold answers' ratio (lmms-eval's bug)
        "questions": n,
    }


# ------------------------------------------------------------------------------------------------------- VQA


def process_punctuation(text: str) -> str:
    return strip_punctuation(text, COMMA_NUMBER, PERIOD)


def _vqav2_normalise(text: str) -> str:
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return digits_and_articles(process_punctuation(text))


def _textvqa_normalise(text: str) -> str:
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return _vqav2_normalise(text)


def textvqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    return leave_one_out(_textvqa_normalise(prediction), [_textvqa_normalise(a) for a in human_answers])


def vqav2_accuracy(prediction: str, human_answers: list[str]) -> float:
    return leave_one_out(_vqav2_normalise(prediction), [_vqav2_normalise(a) for a in human_answers])


# ------------------------------------------------------------------------------------------------------ MMMU

EDGE_CHARACTERS = [",", ".", "!", "?", ";", ":", "'"]  # stripped one after the other
KEY_INDICATORS = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
TRIVIAL_TAILS = {":", ",", ".", "!", "?", ";", "'"}
COMMA_NUMBERS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
SCIENTIFIC_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
PLAIN_NUMBERS = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def mmmu_choice(answer: str, options: dict[str, str], rng: random.Random) -> tuple[str, str]:
    """(letter, rule): the option an answer picks; a random letter from `rng` when nothing is found."""
    for character in EDGE_CHARACTERS:
        answer = answer.strip(character)
    padded = f" {answer} "
    letters = list(options)
    rule = "bracketed letter"
    found = [x for x in letters if f"({x})" in padded]
    if not found:
        rule = "letter and space"
        found = [x for x in letters if f"{x} " in padded]
    if not found:
        rule = "letter and period"
        found = [x for x in letters if f"{x}." in padded]
    if not found and len(padded.split()) > 5:
        rule = "option text"
        found = [x for x, text in options.items() if text.lower() in padded.lower()]
    if not found:
        return rng.choice(letters), "random guess"
    if len(found) == 1:
        return found[0], rule
    if rule == "option text":
        last = [padded.lower().rfind(options[x].lower()) for x in found]
    elif rule == "bracketed letter":
        last = [padded.rfind(f"({x})") for x in found]
    else:  # found by "X " or "X.", ranked by " X " as lmms-eval does (-1 for all: the first)
        last = [padded.rfind(f" {x} ") for x in found]
    return found[last.index(max(last))], rule + ", last"


def _normalise(text: str) -> list[str | float]:
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]
    except ValueError:
        text = text.lower()
        return [f" {text}", f"{text} "] if len(text) == 1 else [text]


def _key_tails(answer: str) -> list[str]:
    text = answer.strip().strip(".").lower()
    lines = re.split(r"\.\s(?=[A-Z])|\n", text)  # after lower(), only the newlines split (as in lmms-eval)
    tails = []
    for k, line in enumerate(lines):
        indicators = KEY_INDICATORS + (["="] if k == len(lines) - 1 else [])
        shortest = None
        for indicator in indicators:
            if indicator in line:
                tail = line.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in TRIVIAL_TAILS:
            tails.append(shortest)
    return tails or [text]


def mmmu_open_candidates(answer: str) -> list[str | float]:
    tails = _key_tails(answer)
    texts = list(tails)
    for tail in tails:
        texts += COMMA_NUMBERS.findall(tail) + SCIENTIFIC_NUMBERS.findall(tail) + PLAIN_NUMBERS.findall(tail)
    candidates: list[str | float] = []
    for text in texts:
        for value in _normalise(text):
            if value not in candidates:
                candidates.append(value)
    return candidates


def mmmu_open_correct(answer: str, gold: str) -> bool:
    golds = _normalise(gold)
    for candidate in mmmu_open_candidates(answer):
        if isinstance(candidate, str):
            if any(isinstance(g, str) and g in candidate for g in golds):
                return True
        elif candidate in golds:
            return True
    return False
