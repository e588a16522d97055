"""Deterministic answer extraction from free text: an option letter, or yes / no.

No judge model and no random fallback: an answer no rule understands is a failed extraction, counted and scored
wrong. The rules, tried in order (the first that decides wins), are listed in evals/README.md; each extraction
records the rule that decided it, so a surprising score can be traced to single answers.
"""

from __future__ import annotations

import re
from typing import NamedTuple

EDGE_NOISE = " \t\n*`\"'_"  # markdown emphasis and quotes around a short answer
NEGATIONS = {"no", "not"}


class Choice(NamedTuple):
    letter: str | None  # None: extraction failed
    rule: str  # which rule decided (or why none did)


def normalise_text(text: str) -> str:
    """Lowercase, inner whitespace collapsed, punctuation trimmed from both ends."""
    text = re.sub(r"\s+", " ", text.lower()).strip()
    return text.strip(" .,;:!?\"'`*()[]{}")


def _distinct(letters: list[str], options: dict[str, str]) -> list[str]:
    return sorted({x for x in letters if x in options})


def _is_word_use(text: str, match: re.Match) -> bool:
    """'A' and 'I' followed by a lowercase word are the article and the pronoun, not option letters."""
    return match.group(1) in "AI" and re.match(r"\s+[a-z]", text[match.end() :]) is not None


def extract_choice(answer: str, options: dict[str, str]) -> Choice:
    """The option letter an answer picks. `options`: letter -> option text, e.g. {"A": "red", "B": "blue"}."""
    text = answer.strip()
    if not text:
        return Choice(None, "empty")
    bare = text.strip(EDGE_NOISE)

    # 1. the whole answer is a letter: "B", "b", "(B)", "B.", "B)", "**B**"
    match = re.fullmatch(r"\(?([A-Za-z])\)?[.:)]?", bare)
    if match and match.group(1).upper() in options:
        return Choice(match.group(1).upper(), "bare letter")

    # 2. the whole answer is one option's text ("Blue.")
    norm = normalise_text(text)
    exact = [k for k, v in options.items() if normalise_text(v) == norm]
    if len(exact) == 1:
        return Choice(exact[0], "option text")

    # 3. a leading letter marker: "B. blue", "B) blue", "B: blue", "(B) blue"
    match = re.match(r"\(([A-Z])\)|([A-Z])[.:)](?=\s|$)", bare)
    if match:
        letter = match.group(1) or match.group(2)
        if letter in options:
            return Choice(letter, "leading letter")

    # 4. an explicit statement: "the answer is B", "Answer: (C)", "option D"
    stated = re.findall(r"(?i:\b(?:answer|option|choice)\b)(?:\s+(?i:is))?\s*:?\s*\(?([A-Z])(?![\w'])", text)
    letters = _distinct(stated, options)
    if len(letters) == 1:
        return Choice(letters[0], "answer phrase")

    # 5. exactly one bracketed letter anywhere: "... so (C) is right"
    letters = _distinct(re.findall(r"\(([A-Z])\)", text), options)
    if len(letters) == 1:
        return Choice(letters[0], "bracketed letter")

    # 6. exactly one standalone capital letter that is an option ("I think B is right"); letters inside an
    # option's own text ("Vitamin C") are not looked at
    texts = {k: normalise_text(v) for k, v in options.items()}
    unmasked = text
    for v in sorted(filter(None, texts.values()), key=len, reverse=True):
        unmasked = re.sub(rf"(?i)(?<!\w){re.escape(v)}(?!\w)", " ", unmasked)
    found = [m.group(1) for m in re.finditer(r"(?<![\w'])([A-Z])(?![\w'])", unmasked) if not _is_word_use(unmasked, m)]
    letters = _distinct(found, options)
    if len(letters) == 1:
        return Choice(letters[0], "standalone letter")
    if len(letters) > 1:
        return Choice(None, "several letters")

    # 7. exactly one option's text appears as whole words (an option inside a longer one does not count)
    hits = [k for k, v in texts.items() if v and re.search(rf"(?<!\w){re.escape(v)}(?!\w)", norm)]
    hits = [k for k in hits if not any(k != o and texts[k] in texts[o] for o in hits)]
    if len(hits) == 1:
        return Choice(hits[0], "option text in answer")
    return Choice(None, "several options" if hits else "no match")


def extract_yes_no(answer: str) -> str | None:
    """'yes', 'no' or None. The first word decides ("Yes.", "yes, there is", "No, it is not"); otherwise the
    answer must contain 'yes' or a negation ('no', 'not'), but not both."""
    words = re.findall(r"[a-z]+", answer.lower())
    if not words:
        return None
    if words[0] in ("yes", "no"):
        return words[0]
    affirmative = "yes" in words
    negative = any(w in NEGATIONS for w in words)
    if affirmative != negative:
        return "yes" if affirmative else "no"
    return None
