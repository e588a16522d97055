"""The one conversion between ovis-lit's ids and the original Ovis 1.6/2 ids (the import/export boundary).

ovis-lit's ids hold one -300 per visual token, for every generation: a crop of an Ovis 1.6/2 image is a run of
`tokens_per_crop` -300s, so the model's merge is a plain masked assignment and a sample's length is the length of
its ids. The original Ovis 1.6/2 code writes one -300 per crop and expands it inside the model; its fixtures and
checkpoints' processors speak that layout. `from_original_ids` expands each atom into its crop's run,
`to_original_ids` collapses each run back to one atom; they are inverse to each other. Labels travel along: the
positions a run adds are unsupervised (IGNORE_ID), as the atom was.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..constants import IGNORE_ID, IMAGE_ATOM_ID


def from_original_ids(
    ids: Sequence[int], tokens_per_crop: int, labels: Sequence[int] | None = None
) -> tuple[list[int], list[int] | None]:
    """Original layout (one -300 per crop) -> ovis-lit's (one -300 per visual token). Returns (ids, labels)."""
    if tokens_per_crop < 1:
        raise ValueError(f"tokens_per_crop must be positive, got {tokens_per_crop}")
    if labels is not None and len(labels) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    out_ids: list[int] = []
    out_labels: list[int] | None = None if labels is None else []
    for i, token in enumerate(ids):
        n = tokens_per_crop if token == IMAGE_ATOM_ID else 1
        out_ids.extend([token] * n)
        if out_labels is not None:
            out_labels.extend([IGNORE_ID] * n if token == IMAGE_ATOM_ID else [labels[i]])
    return out_ids, out_labels


def to_original_ids(
    ids: Sequence[int], tokens_per_crop: int, labels: Sequence[int] | None = None
) -> tuple[list[int], list[int] | None]:
    """ovis-lit's layout -> the original's: every run of -300s must be a whole number of crops
    (`tokens_per_crop` each), and each crop becomes one atom. Returns (ids, labels)."""
    if tokens_per_crop < 1:
        raise ValueError(f"tokens_per_crop must be positive, got {tokens_per_crop}")
    if labels is not None and len(labels) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    keep, run = [], 0
    for i, token in enumerate(ids):
        if token == IMAGE_ATOM_ID:
            if run % tokens_per_crop == 0:
                keep.append(i)  # the first visual token of a crop stands for the crop
            run += 1
            continue
        if run % tokens_per_crop:
            raise ValueError(f"a run of {run} visual tokens is not a whole number of {tokens_per_crop}-token crops")
        run = 0
        keep.append(i)
    if run % tokens_per_crop:
        raise ValueError(f"a run of {run} visual tokens is not a whole number of {tokens_per_crop}-token crops")
    return [ids[i] for i in keep], None if labels is None else [labels[i] for i in keep]
