"""Multiple-choice benchmarks in VLMEvalKit's MMBench TSV layout (index, question, hint, A..D, answer, category,
image as base64), scored by letter."""

from __future__ import annotations

import base64
import csv
import io
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

LETTERS = "ABCDEFGHI"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def read_tsv(path: str | Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def decode_image(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def options_of(row: dict[str, str]) -> dict[str, str]:
    """The non-empty option columns A, B, C, ... in order."""
    return {k: row[k] for k in LETTERS if row.get(k) not in (None, "", "nan")}


def mcq_prompt(row: dict[str, str], instruction: str = MC_INSTRUCTION) -> str:
    """Pinned prompt: [Hint], question, lettered options, then the instruction (Ovis/LLaVA MCQ style)."""
    parts = []
    hint = (row.get("hint") or "").strip()
    if hint and hint != "nan":
        parts.append(f"Hint: {hint}")
    parts.append(row["question"].strip())
    parts += [f"{k}. {v}" for k, v in options_of(row).items()]
    parts.append(instruction)
    return "\n".join(parts)


def extract_letter(answer: str, options: dict[str, str]) -> str | None:
    """A letter from a free-text answer: a bare/bracketed/dotted letter, else exactly one option's text."""
    text = answer.strip()
    match = re.match(r"^\(?([A-I])(?:[\).:]|\s|$)", text)
    if match and match.group(1) in options:
        return match.group(1)
    lowered = text.lower()
    hits = [k for k, v in options.items() if v.lower() in lowered]
    return hits[0] if len(hits) == 1 else None


def score(rows: list[dict[str, str]], answers: list[str]) -> dict[str, Any]:
    correct = 0
    failed = 0
    per_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    predictions = []
    for row, answer in zip(rows, answers):
        letter = extract_letter(answer, options_of(row))
        failed += letter is None
        ok = letter == row["answer"].strip()
        correct += ok
        cat = per_category[row.get("category") or "all"]
        cat[0] += ok
        cat[1] += 1
        predictions.append({"index": row.get("index"), "answer": answer, "extracted": letter, "correct": ok})
    n = len(rows)
    return {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "failed_extractions": failed,
        "per_category": {c: v[0] / v[1] for c, v in sorted(per_category.items())},
        "predictions": predictions,
    }
