"""The project's synthetic held-out set: `mc-test.tsv` from ovis_lit.data.shapes (MMBench layout, four options).

Scored like MMBench, without rotations, and prompted with the instruction the shapes training data teaches
(conf/data/shapes.yaml `heldout_instruction`) rather than MMBench's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

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
        if self.build_if_missing:
            _, n, seed = shapes.MC_TEST
            write_if_missing(self.path, "the shapes held-out set", lambda path: shapes.write_mc_tsv(path, n, seed))
        return super().read_items()


class SceneSetBenchmark(Shapes):
    """A scene set's held-out A-D split (`data/scene_sets.py`: `<kind>-mc-test.tsv`, written on first use when
    missing), prompted and scored as the shapes set."""

    def read_items(self) -> list[Item]:
        if self.build_if_missing:
            from ...data.scene_sets import write_mc_tsv

            scenes = shapes.scene_set(self.kind)
            write_if_missing(self.path, f"the {self.kind} held-out set", lambda path: write_mc_tsv(scenes, path))
        return MultipleChoice.read_items(self)


@register
class ShapesHard(SceneSetBenchmark):
    """Shapes scenes whose answers need fine detail (`data/shapes_hard.py`)."""

    kind = "shapes_hard"


@register
class Digits(SceneSetBenchmark):
    """Scenes of handwritten digits the model never saw (`data/digits.py`)."""

    kind = "digits"


def write_if_missing(path: Path, what: str, write: Callable[[Path], None]) -> None:
    """Write a synthetic held-out file on first use: only the file (what ensure_shapes_dataset writes at scale 1),
    not the training shards."""
    if not path.is_file():
        log.info("writing %s to %s", what, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
