"""VQA accuracy (VQAv2, TextVQA): answer normalisation and the leave-one-out average over human answers.

Normalisation, applied to the prediction and to every human answer alike:
1. newlines and tabs become spaces; lowercase; trim.
2. punctuation (; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !) is deleted when it touches a space or the text has a
   digit-comma-digit number ("1,000"), and becomes a space otherwise ("black/white" -> "black white");
   a period is dropped unless a digit follows it (keeps "3.5", drops "yes.").
3. per word: number words zero..ten (and "none") become digits; the articles a / an / the are dropped;
   a contraction written without its apostrophe gets it back ("dont" -> "don't"), except where the bare form is
   an English word of its own ("well", "were", "its", ...).
Accuracy of one question: for each of the n human answers left out in turn, min(1, matches among the other
n - 1 / 3); the mean over the n hold-outs (n = 10: the 10-choose-9 average).
"""

from __future__ import annotations

import re

PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
LONE_PERIOD = re.compile(r"\.(?!\d)")
NUMBER_WORDS = {w: str(k) for k, w in enumerate("zero one two three four five six seven eight nine ten".split())}
NUMBER_WORDS["none"] = "0"
ARTICLES = {"a", "an", "the"}
CONTRACTIONS_WITH_APOSTROPHE = """
ain't aren't can't can't've could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's i'd i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't
mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't she'd she'd've she's should've
shouldn't shouldn't've somebody'd somebody'll somebody's someone'd someone'll someone's something'd something'll
something's that'd that's there'd there're there's they'd they'll they're they've twas wasn't we'd we'd've we're
we've weren't what'll what're what's what've when'll where'd where's where've who'd who'll who're who's who've
why'll why're why's won't would've wouldn't wouldn't've y'all y'all'd y'all'll you'd you'll you're you've
""".split()
# bare forms that are words in their own right: restoring an apostrophe would change a correct answer
BARE_WORDS = {"hell", "well", "were", "wed", "shed", "shell", "ill", "its", "id", "lets", "cant", "wont", "twas",
              "whore", "hows", "whos"}
CONTRACTIONS = {c.replace("'", ""): c for c in CONTRACTIONS_WITH_APOSTROPHE if c.replace("'", "") not in BARE_WORDS}


def _punctuation(text: str) -> str:
    out = text
    delete_all = DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if delete_all or f"{p} " in text or f" {p}" in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return LONE_PERIOD.sub("", out)


def _words(text: str) -> str:
    words = []
    for word in text.split():
        word = NUMBER_WORDS.get(word, word)
        if word in ARTICLES:
            continue
        words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalise_answer(answer: str) -> str:
    text = answer.replace("\n", " ").replace("\t", " ").lower().strip()
    return _words(_punctuation(text))


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    if not human_answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    pred = normalise_answer(prediction)
    gold = [normalise_answer(a) for a in human_answers]
    if len(gold) == 1:  # nothing to leave out: a plain match
        return float(pred == gold[0])
    total = 0.0
    for left_out in range(len(gold)):
        matches = sum(g == pred for k, g in enumerate(gold) if k != left_out)
        total += min(1.0, matches / 3)
    return total / len(gold)
