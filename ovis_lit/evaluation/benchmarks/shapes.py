"""The project's synthetic held-out set: `mc-test.tsv` from ovis_lit.data.shapes (MMBench layout, four options).

Scored like MMBench, without rotations, and prompted with the instruction the shapes training data teaches
(conf/data/shapes.yaml `heldout_instruction`) rather than MMBench's.
"""

from __future__ import annotations

import logging

from ...data import shapes
from .base import Item, register
from .mmbench import MultipleChoice

log = logging.getLogger(__name__)


@register
class Shapes(MultipleChoice):
    kind = "shapes"
    instruction = shapes.MC_INSTRUCTION
    circular_default = False
    default_max_new_tokens = 16
    prompt_template = "{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n" + shapes.MC_INSTRUCTION

    def __init__(self, path, max_new_tokens: int | None = None, circular: bool | str | None = None,
                 build_if_missing: bool = True, **options):
        super().__init__(path, max_new_tokens, circular, **options)
        self.build_if_missing = build_if_missing

    def read_items(self) -> list[Item]:
        if not self.path.is_file() and self.build_if_missing:
            # Only the held-out file (what ensure_shapes_dataset writes at scale 1), not the training shards.
            name, n, seed = shapes.MC_TEST
            log.info("writing the shapes held-out set to %s", self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            shapes.write_mc_tsv(self.path, n, seed)
        return super().read_items()
