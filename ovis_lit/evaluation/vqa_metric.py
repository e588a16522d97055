"""VQA accuracy (VQAv2, TextVQA): the official VQA answer normalisation and the leave-one-out average over the human
answers, in the pieces the toolkits combine differently (modes/vlmevalkit.py and modes/lmms_eval.py say how).

The pieces, as the official VQA evaluation defines them (and both toolkits carry them):
- punctuation: each of the characters below is deleted when it touches a space, or when the text has a
  digit-comma-digit number anywhere ("1,000"); otherwise it becomes a space ("black/white" -> "black white").
  Then periods are deleted, at most 32 of them (the official code passes re.UNICODE, 32, where re.sub takes its
  count); which periods count is the one thing the toolkits write differently (`period` below).
- words: lowercase, split on whitespace; number words zero..ten and "none" become digits; the articles a / an / the
  are dropped; then a word that is a key of the contraction table is replaced by its value. The table is the
  official one: "cant" -> "can't", "wont" -> "won't", "hows", "whos" are restored, but its keys "Im", "Ive",
  "Id've" are capitalised and so never match a lowercased word ("im" stays "im"); "somebody'd" maps to
  "somebodyd" (backwards in the official table, kept).
- accuracy of one question: for each human answer left out in turn, min(1, matches among the others / 3), averaged.
  A question with a single human answer has nothing to match against after leaving it out: 0.
"""

from __future__ import annotations

import re

PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!"]
PERIOD_DELETIONS = 32  # re.UNICODE passed as re.sub's count in the official code
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}

# The official contraction table maps a spelling without apostrophes to the contraction: mostly the contraction
# with its apostrophes dropped (built from this list by _contractions), plus the keys below.
_RESTORED = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd he'd've
he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't
must've needn't not've o'clock oughtn't shan't she'd've should've shouldn't shouldn't've somebody'd've
somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll that's
there'd there'd've there're there's they'd they'd've they'll they're they've wasn't we'd've we've weren't what'll
what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't
would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()
# keys that are not the replacement with every apostrophe dropped: half-restored spellings, and oddities
_EXTRA_KEYS = {
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hed've": "he'd've", "he'dve": "he'd've", "I'dve": "I'd've", "itd've": "it'd've", "it'dve": "it'd've",
    "let's": "let's", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "somethingd've": "something'd've", "something'dve": "something'd've",
    "thered've": "there'd've", "there'dve": "there'd've", "theyd've": "they'd've", "they'dve": "they'd've",
    "twas": "'twas", "wed've": "we'd've", "we'dve": "we'd've", "whod've": "who'd've", "who'dve": "who'd've",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd've": "you'd've",
    "you'dve": "you'd've", "Id've": "I'd've",
}
# in the official table "he'd", "she'd", "we'd", "I'd", "it's", ... have no apostrophe-less key
_NOT_KEYED = {"I'd've", "it'd've", "somebody'd've", "someone'd've", "something'd've", "there'd've", "they'd've",
              "who'd've", "y'all'd've", "you'd've", "he'd've", "couldn't've", "hadn't've", "mightn't've",
              "shouldn't've", "wouldn't've", "y'all'll", "somebody'd", "she'd've", "we'd've"}


def _contractions() -> dict[str, str]:
    table = {c.replace("'", ""): c for c in _RESTORED if c not in _NOT_KEYED}
    table.update(_EXTRA_KEYS)
    return table


CONTRACTIONS = _contractions()


def strip_punctuation(text: str, comma_number: re.Pattern, period: re.Pattern) -> str:
    """The official punctuation step; `comma_number` and `period` are the two patterns the toolkits spell
    differently."""
    out = text
    delete = comma_number.search(text) is not None
    for p in PUNCTUATION:
        if delete or f"{p} " in text or f" {p}" in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return period.sub("", out, count=PERIOD_DELETIONS)


def digits_and_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def leave_one_out(prediction: str, human_answers: list[str]) -> float:
    """Mean over the human answers left out in turn of min(1, matches among the others / 3); both sides already
    normalised. One human answer: 0.0 (the official metric's value)."""
    if not human_answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    total = 0.0
    for left_out in range(len(human_answers)):
        matches = sum(g == prediction for k, g in enumerate(human_answers) if k != left_out)
        total += min(1.0, matches / 3)
    return total / len(human_answers)
