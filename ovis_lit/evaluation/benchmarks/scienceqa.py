"""ScienceQA-IMG: the image questions of ScienceQA as lettered multiple choice (VLMEvalKit's ScienceQA_TEST.tsv /
ScienceQA_VAL.tsv: MMBench columns, the lecture context in `hint`). Rows without an image are not IMG questions:
they are skipped and counted."""

from __future__ import annotations

from ...rejection import Rejected
from ..mcq import MC_INSTRUCTION, options_of
from ..tsv import cell
from .base import register
from .mmbench import MultipleChoice


@register
class ScienceQA(MultipleChoice):
    kind = "scienceqa"
    circular_default = False
    prompt_template = "[Context: {hint}\n]{question}\nA. {A}\nB. {B}\n...\n" + MC_INSTRUCTION

    def keep(self, row: dict[str, str]) -> None:
        if not (cell(row, "image") or cell(row, "image_path")):
            raise Rejected("no image (not an IMG question)")

    def prompt(self, row: dict[str, str]) -> str:
        parts = [f"Context: {row['hint']}"] if row.get("hint") else []
        parts.append(row["question"])
        parts += [f"{k}. {v}" for k, v in options_of(row).items()]
        parts.append(self.instruction)
        return "\n".join(parts)
