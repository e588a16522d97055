"""Caption metrics through pycocoevalcap (the COCO caption toolkit's Python 3 package): BLEU-1..4, METEOR 1.5,
ROUGE-L and CIDEr-D, on captions tokenised as COCO tokenises them.

Tokeniser: pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1 run with `java`, lowercased, its punctuation tokens
dropped). Where no `java` is on PATH it cannot run, and neither can METEOR: `ptb_like_tokens` below then stands in
(a pure-Python imitation of the same rules, exact on ordinary captions; exotic text can differ), METEOR is left out,
and the summary says so (`tokenizer`, `meteor` in the details). `none` passes the captions as they are (split on
spaces by the scorers, case and punctuation kept), which is what VLMEvalKit's COCO_VAL evaluation does.

Scores are pycocoevalcap's own, unchanged: BLEU with its "closest" reference length (a tie between a shorter and a
longer reference takes the shorter), ROUGE-L with beta 1.2 over the best precision and the best recall across the
references, CIDEr-D with idf from the references of the images scored together (one image alone scores 0).
"""

from __future__ import annotations

import re
import shutil
from typing import Any

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer

TOKENIZERS = ("auto", "ptb", "ptb_like", "none")  # none: the captions as they are (VLMEvalKit's COCO_VAL)
# what PTBTokenizer leaves out after lowercasing (its list is upper-case for the brackets, which -lowerCase has
# already turned into -lrb- etc., so those stay, as they do in COCO's numbers)
DROPPED = frozenset(PUNCTUATIONS)
BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "no."})  # PTB keeps these whole
CLITICS = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)(?=\W|$)")


def java_available() -> bool:
    return shutil.which("java") is not None


def ptb_like_tokens(text: str) -> list[str]:
    """The fallback tokeniser (no Java): what PTBTokenizer -lowerCase does to ordinary captions, then COCO's
    punctuation filter. Brackets become -lrb- / -rrb- (kept, as in COCO), clitics are split off ("isn't" -> "is n't",
    "can't" -> "ca n't", "dog's" -> "dog 's"), double quotes, sentence punctuation and dashes between words go;
    hyphenated words, decimals and abbreviations ("u.s.", "mr.") stay whole."""
    text = text.lower().replace("\n", " ")
    text = re.sub(r"[()\[\]{}]", lambda m: f" {BRACKETS[m.group()]} ", text)
    text = text.replace('"', " ")
    text = CLITICS.sub(r" \1", text)
    text = re.sub(r"\.\.\.|--|[,;:?!`$%&]|(?<!\w)'(?!(?:s|re|ve|ll|d|m)(?:\W|$))|(?<=\w)'(?!\w)",
                  lambda m: f" {m.group()} ", text)
    tokens = []
    for token in text.split():
        # a final period is split off, unless the token is an abbreviation with inner periods (u.s.)
        if token.endswith(".") and len(token) > 1 and "." not in token[:-1] and token not in ABBREVIATIONS:
            tokens += [token[:-1], "."]
        else:
            tokens.append(token)
    return [t for t in tokens if t not in DROPPED]


def resolve_tokenizer(tokenizer: str) -> str:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"caption tokenizer {tokenizer!r}: one of {TOKENIZERS}")
    if tokenizer == "auto":
        return "ptb" if java_available() else "ptb_like"
    if tokenizer == "ptb" and not java_available():
        raise RuntimeError("tokenizer=ptb needs `java` on PATH (pycocoevalcap's PTBTokenizer); use ptb_like or auto")
    return tokenizer


def tokenize(captions: dict[int, list[str]], tokenizer: str) -> dict[int, list[str]]:
    """image -> its captions, each as one string of space-separated tokens (what pycocoevalcap's scorers take)."""
    if tokenizer == "none":
        return {k: list(v) for k, v in captions.items()}
    if tokenizer == "ptb":
        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return {k: [" ".join(ptb_like_tokens(c)) for c in v] for k, v in captions.items()}


def caption_scores(candidates: list[str], references: list[list[str]], tokenizer: str = "auto",
                   meteor: str | bool = "auto") -> tuple[dict[str, float], list[dict[str, float]], dict[str, Any]]:
    """(corpus metrics, per-image metrics, how they were computed). `meteor`: "auto" = when Java exists."""
    if len(candidates) != len(references):
        raise ValueError("one list of references per candidate")
    if any(not refs for refs in references):
        raise ValueError("every image needs at least one reference caption")
    tokenizer = resolve_tokenizer(tokenizer)
    use_meteor = java_available() if meteor == "auto" else bool(meteor)
    if use_meteor and not java_available():
        raise RuntimeError("meteor=true needs `java` on PATH (METEOR 1.5 is a Java program)")
    info = {"toolkit": "pycocoevalcap", "tokenizer": tokenizer, "meteor": use_meteor}
    if not candidates:
        return {}, [], info
    gts = tokenize(dict(enumerate(references)), tokenizer)
    res = tokenize({i: [c] for i, c in enumerate(candidates)}, tokenizer)
    corpus: dict[str, float] = {}
    per_image: list[dict[str, float]] = [{} for _ in candidates]
    bleu, bleu_per_image = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        corpus[f"bleu{n + 1}"] = float(bleu[n])
        for i, value in enumerate(bleu_per_image[n]):
            per_image[i][f"bleu{n + 1}"] = float(value)
    scorers = [("rougeL", Rouge()), ("cider", Cider())]
    if use_meteor:
        from pycocoevalcap.meteor.meteor import Meteor  # starts a Java process at construction

        scorers.insert(0, ("meteor", Meteor()))
    for name, scorer in scorers:
        score, scores = scorer.compute_score(gts, res)
        corpus[name] = float(score)
        for i, value in enumerate(scores):
            per_image[i][name] = float(value)
    return corpus, per_image, info
