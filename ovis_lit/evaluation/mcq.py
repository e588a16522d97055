"""Multiple-choice rows in VLMEvalKit's MMBench TSV layout (index, question, hint, A..D, answer, category, image as
base64): their options and the pinned prompt. Extraction and scoring live in modes/ and benchmarks/."""

from __future__ import annotations

LETTERS = "ABCDEFGHI"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


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
