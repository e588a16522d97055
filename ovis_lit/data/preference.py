"""Preference pairs (DPO) on the same WebDataset spine as the SFT samples: record -> pair -> batch.

A pair record is a shard record like any other (`data/convert/preference.py` writes them): `<key>.json` holds
{"prompt": [turns ending with a user turn], "chosen": "...", "rejected": "...", "images": [member names]?,
"ref_logps": [chosen, rejected]?} and the images are members, as in `samples`. Checked by
`validation.check_preference` (the converter's own checks).

Each pair becomes two samples formatted by the processor as conversations: the prompt, then one answer. Only the
final answer is labelled (earlier assistant turns of a multi-turn prompt are the same in both and are context, not
what is compared). Both samples of a pair go into the same micro-batch: `PairCollate` lays a batch out as all
chosen samples, then all rejected ones, in pair order. A pair over `max_length` (either answer) is skipped
(`too_long`) rather than cut: truncation would compare answers cut at different places. With
`reference_logps`, a pair without precomputed reference log-probs is skipped (`missing_reference_logps`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..constants import IGNORE_ID
from ..rejection import Rejected
from .samples import SampleBuilder, image_names, record_images, record_meta
from .validation import check_image_count, check_preference, preference_turns


@dataclass
class PreferencePair:
    chosen: Any  # processing Sample (ids, labels, pixel values)
    rejected: Any
    ref_logps: tuple[float, float] | None = None  # precomputed reference sequence log-probs (chosen, rejected)
    meta: dict = field(default_factory=dict)

    @property
    def input_ids(self) -> list[int]:
        """Both sequences' ids: their length is the pair's tokens (data/batching.py's token budget counts them)."""
        return self.chosen.input_ids + self.rejected.input_ids


def last_turn_labels(labels: list[int]) -> list[int]:
    """The labels of the last labelled run only (the final assistant turn): each assistant turn is one run of labels,
    user turns between them are unlabelled."""
    end = max((i for i, t in enumerate(labels) if t != IGNORE_ID), default=-1)
    start = end
    while start > 0 and labels[start - 1] != IGNORE_ID:
        start -= 1
    return [t if start <= i <= end else IGNORE_ID for i, t in enumerate(labels)]


@dataclass
class PreferenceBuilder:
    """Callable record -> PreferencePair, inside dataloader workers (so it pickles). `samples` does the formatting
    and holds the options (processor, max_length, pixel limit)."""

    samples: SampleBuilder
    reference_logps: bool = False  # the stage reads precomputed reference log-probs: pairs must carry them

    def __call__(self, record: dict) -> PreferencePair:
        key = record.get("__key__", "")
        meta = record_meta(record)
        check_preference(meta, key, self.samples._allows_system())
        n_images = len(image_names(record, meta))
        turns = {name: preference_turns(meta, name) for name in ("chosen", "rejected")}
        for conversation in turns.values():
            check_image_count({"conversations": conversation}, n_images, key)
        if self.reference_logps and meta.get("ref_logps") is None:
            raise Rejected("missing_reference_logps", f"{key}: the stage reads precomputed reference log-probs")
        images = record_images(record, meta, self.samples.max_image_pixels)
        pair = {}
        for name, conversation in turns.items():
            try:
                sample = self.samples.processor.conversation(conversation, images)
            except Rejected:
                raise
            except ValueError as exn:  # formatter refusals, as in SampleBuilder
                raise Rejected("invalid_sample", f"{key}: {exn}") from exn
            if len(sample.input_ids) > self.samples.max_length:
                raise Rejected("too_long", f"{key}: the {name} sequence has {len(sample.input_ids)} ids > "
                                           f"{self.samples.max_length}")
            sample.labels = last_turn_labels(sample.labels)
            if all(label == IGNORE_ID for label in sample.labels):
                raise Rejected("no_supervised_tokens", key)
            sample.meta["key"] = key
            pair[name] = sample
        ref = meta.get("ref_logps")
        return PreferencePair(pair["chosen"], pair["rejected"], None if ref is None else (float(ref[0]), float(ref[1])),
                              {"key": key})


@dataclass
class PairCollate:
    """Pairs -> one batch: the processor's collate over [chosen_1..chosen_P, rejected_1..rejected_P]; `pairs` = P,
    and `ref_logps` [2P] in the same order when every pair carries them."""

    collate: Callable[[list], dict]

    def __call__(self, pairs: list[PreferencePair]) -> dict[str, Any]:
        batch = self.collate([p.chosen for p in pairs] + [p.rejected for p in pairs])
        batch["pairs"] = len(pairs)
        if pairs and all(p.ref_logps is not None for p in pairs):
            batch["ref_logps"] = torch.tensor([p.ref_logps[0] for p in pairs] + [p.ref_logps[1] for p in pairs],
                                              dtype=torch.float32)
        return batch
