"""Caption metrics: BLEU-4 and ROUGE-L from torchmetrics, CIDEr-D implemented here (torchmetrics has none).

Tokenisation, the same for all three: lowercase, every character that is not a letter, digit or whitespace
becomes a space ("don't" -> "don t", "red-ish." -> "red ish"), then split on whitespace. COCO's toolkit uses the
Stanford PTB tokenizer instead, so scores can differ slightly from published ones.

CIDEr-D (Vedantam et al. 2015, the variant COCO reports), per image with candidate c and references R:
- n-grams of length 1..4; each is weighted by tf * idf, tf its count in the sentence, idf = log(N / df) with N the
  number of images evaluated together and df the number of images whose references contain it (at least 1);
- for each n and reference r: sum over n-grams of min(c, r) * r over the two weight vectors (clipping: repeating
  a word earns nothing), divided by both vectors' norms, times exp(-(len(c) - len(r))^2 / (2 * 6^2));
- the mean over references, the mean over n, times 10. The corpus CIDEr is the mean over images.
idf comes from the references of the evaluated set, so the score of one caption depends on the others, and a set
of a single image scores 0 (every idf is log 1).
"""

from __future__ import annotations

import math
import re
from collections import Counter

from torchmetrics.text import BLEUScore, ROUGEScore

CIDER_MAX_N = 4
CIDER_SIGMA = 6.0


def caption_tokens(text: str) -> list[str]:
    return re.sub(r"[^\w\s]|_", " ", text.lower()).split()


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[k : k + n]) for k in range(len(tokens) - n + 1))


def _weights(counts: Counter, idf: dict[tuple, float]) -> tuple[dict[tuple, float], float]:
    vector = {g: tf * idf.get(g, 0.0) for g, tf in counts.items()}
    return vector, math.sqrt(sum(v * v for v in vector.values()))


def cider_d(candidates: list[str], references: list[list[str]]) -> tuple[float, list[float]]:
    """(corpus CIDEr-D, per-image scores). Every image needs at least one reference."""
    if len(candidates) != len(references):
        raise ValueError("one list of references per candidate")
    if any(not refs for refs in references):
        raise ValueError("every image needs at least one reference caption")
    n_images = len(candidates)
    cand_tokens = [caption_tokens(c) for c in candidates]
    ref_tokens = [[caption_tokens(r) for r in refs] for refs in references]
    log_n = math.log(float(n_images)) if n_images else 0.0
    per_image = [0.0] * n_images
    for n in range(1, CIDER_MAX_N + 1):
        df: Counter = Counter()
        for refs in ref_tokens:
            df.update({g for r in refs for g in _ngrams(r, n)})
        idf = {g: log_n - math.log(max(1.0, d)) for g, d in df.items()}
        for i in range(n_images):
            # an n-gram no reference has gets idf log(N / 1), as in the original (df floored at 1)
            cand_counts = _ngrams(cand_tokens[i], n)
            cand_idf = {g: idf.get(g, log_n) for g in cand_counts}
            cand_vec, cand_norm = _weights(cand_counts, cand_idf)
            total = 0.0
            for r in ref_tokens[i]:
                ref_vec, ref_norm = _weights(_ngrams(r, n), idf)
                overlap = sum(min(v, ref_vec[g]) * ref_vec[g] for g, v in cand_vec.items() if g in ref_vec)
                similarity = overlap / (cand_norm * ref_norm) if cand_norm and ref_norm else 0.0
                delta = len(cand_tokens[i]) - len(r)
                total += similarity * math.exp(-(delta**2) / (2 * CIDER_SIGMA**2))
            per_image[i] += 10.0 * total / len(ref_tokens[i]) / CIDER_MAX_N
    return (sum(per_image) / n_images if n_images else 0.0), per_image


def caption_scores(candidates: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-4 (torchmetrics, no smoothing), ROUGE-L F (torchmetrics: best reference per image, averaged)
    and CIDEr-D, all on the tokenisation above."""
    joined = [" ".join(caption_tokens(c)) for c in candidates]
    joined_refs = [[" ".join(caption_tokens(r)) for r in refs] for refs in references]
    bleu = BLEUScore(n_gram=4)(joined, joined_refs)
    # normalizer=str: the tokenizer alone decides (torchmetrics' default would also drop non-ASCII letters)
    rouge = ROUGEScore(rouge_keys="rougeL", accumulate="best", normalizer=str, tokenizer=caption_tokens)(
        candidates, references
    )
    cider, _ = cider_d(candidates, references)
    return {"bleu4": float(bleu), "rougeL": float(rouge["rougeL_fmeasure"]), "cider": cider}
