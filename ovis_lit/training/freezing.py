"""Which parameters a stage trains: one place that freezes by stage and reports it.

Patterns name modules of the OvisModel by dotted prefix: "all", "llm", "vte", "visual_tokenizer",
"visual_tokenizer.head", "visual_tokenizer.backbone", any deeper module name, or
"visual_tokenizer.backbone.layers.<i>" for the i-th ViT encoder layer (negative i counts from the end, so
"visual_tokenizer.backbone.layers.-1" is the last block, whatever the backbone family calls its layers).
Parameters Ovis never uses (the ViT's final norm and pooling head) always stay frozen.

The original code's `train_modules` names are accepted too, whatever the generation: "visual_tokenizer.vit" (Ovis2.5)
is the ViT, "visual_tokenizer.vit.last_block" its last block, "visual_tokenizer.backbone.layer.<i>" (Ovis1.5-2) its
i-th layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from ..model.ovis import OvisModel
from ..model.vision import encoder_layers, unused_parameter_names

_LAYER_ALIAS = re.compile(r"^visual_tokenizer\.backbone\.layers\.(-?\d+)$")
# the original's train_modules names -> ours (every backbone family lives at visual_tokenizer.backbone here)
_ORIGINAL_NAMES = {
    "visual_tokenizer.vit": "visual_tokenizer.backbone",
    "visual_tokenizer.vit.last_block": "visual_tokenizer.backbone.layers.-1",
}
_ORIGINAL_LAYER = re.compile(r"^visual_tokenizer\.backbone\.layer\.(-?\d+)$")


def canonical_pattern(pattern: str) -> str:
    """The original code's module names in ovis-lit's spelling; other patterns unchanged."""
    layer = _ORIGINAL_LAYER.match(pattern)
    if layer:
        return f"visual_tokenizer.backbone.layers.{layer.group(1)}"
    return _ORIGINAL_NAMES.get(pattern, pattern)


def resolve_pattern(model: OvisModel, pattern: str) -> str:
    """A pattern -> the module-name prefix it stands for ("" for all)."""
    pattern = canonical_pattern(pattern)
    if pattern == "all":
        return ""
    alias = _LAYER_ALIAS.match(pattern)
    if alias:
        layers = encoder_layers(model.visual_tokenizer.backbone)
        index = int(alias.group(1))
        if not -len(layers) <= index < len(layers):
            raise ValueError(f"{pattern!r}: the ViT has {len(layers)} layers")
        target = layers[index]
        return next(name for name, module in model.named_modules() if module is target)
    names = dict(model.named_modules())
    if pattern not in names:
        raise ValueError(f"unknown module pattern {pattern!r}; e.g. all, llm, vte, visual_tokenizer.head, "
                         "visual_tokenizer.backbone, visual_tokenizer.backbone.layers.-1")
    return pattern


def matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def unused_parameters(model: OvisModel) -> set[str]:
    return {"visual_tokenizer.backbone." + n for n in unused_parameter_names(model.visual_tokenizer.backbone)}


def apply_trainable(model: OvisModel, patterns: list[str]) -> list[str]:
    """Freeze everything, then unfreeze what `patterns` name. Returns the trainable parameter names."""
    prefixes = [resolve_pattern(model, p) for p in patterns]
    unused = unused_parameters(model)
    trainable = []
    for name, param in model.named_parameters():
        on = name not in unused and any(matches(name, p) for p in prefixes)
        param.requires_grad_(on)
        if on:
            trainable.append(name)
    if not trainable:
        raise ValueError(f"trainable patterns {patterns} select no parameter")
    return trainable


@dataclass
class Row:
    module: str
    trainable: int
    frozen: int


def _group(name: str) -> str:
    """Report granularity: each layer of a layer stack, otherwise the first three name parts."""
    parts = name.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        return ".".join(parts[: i + 2])
    return ".".join(parts[:3])


def trainable_table(model: nn.Module) -> list[Row]:
    """Trainable / frozen parameter counts per module; runs of layers with the same status are merged."""
    rows: list[Row] = []
    for name, param in model.named_parameters():
        key = _group(name)
        if not rows or rows[-1].module != key:
            rows.append(Row(key, 0, 0))
        if param.requires_grad:
            rows[-1].trainable += param.numel()
        else:
            rows[-1].frozen += param.numel()
    merged: list[Row] = []
    for row in rows:
        prev = merged[-1] if merged else None
        same_stack = prev is not None and _stack(prev.module) == _stack(row.module) and _stack(row.module) is not None
        same_status = prev is not None and (prev.trainable > 0, prev.frozen > 0) == (row.trainable > 0, row.frozen > 0)
        if same_stack and same_status:
            first = prev.module.rsplit(".", 1)[1].split("-")[0]
            prev.module = f"{_stack(row.module)}.{first}-{row.module.rsplit('.', 1)[1]}"
            prev.trainable += row.trainable
            prev.frozen += row.frozen
        else:
            merged.append(Row(row.module, row.trainable, row.frozen))
    return merged


def _stack(module: str) -> str | None:
    head, _, last = module.rpartition(".")
    return head if head.endswith("layers") and last.split("-")[0].isdigit() else None


def format_table(rows: list[Row]) -> str:
    width = max(len(r.module) for r in rows + [Row("module", 0, 0)])
    lines = [f"{'module':<{width}}  {'trainable':>13}  {'frozen':>13}"]
    for r in rows:
        lines.append(f"{r.module:<{width}}  {r.trainable:>13,}  {r.frozen:>13,}")
    total_t, total_f = sum(r.trainable for r in rows), sum(r.frozen for r in rows)
    lines.append(f"{'total':<{width}}  {total_t:>13,}  {total_f:>13,}")
    return "\n".join(lines)
