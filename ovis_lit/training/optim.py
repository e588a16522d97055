"""Per-module learning rates (the warmup + cosine schedule is transformers', see OvisLitModule.configure_optimizers)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .freezing import matches, resolve_pattern

NO_DECAY_HINTS = ("bias", "norm", "embed", "vte.weight")


def param_groups(
    model: nn.Module, base_lr: float, module_lr: dict[str, float] | None = None, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Trainable parameters grouped by the most specific `module_lr` pattern that names them.

    Each group is named after its pattern ("default" for the rest) so LR monitors log one curve per module.
    With weight decay, biases, norms and embedding tables go to a `/no_decay` twin of their group.
    """
    patterns = dict(module_lr or {})
    resolved = {pattern: resolve_pattern(model, pattern) for pattern in patterns}
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        hits = [p for p, prefix in resolved.items() if matches(name, prefix)]
        pattern = max(hits, key=lambda p: len(resolved[p])) if hits else "default"
        lr = patterns.get(pattern, base_lr)
        decay = weight_decay if weight_decay and not any(h in name.lower() for h in NO_DECAY_HINTS) else 0.0
        key = pattern if decay or not weight_decay else f"{pattern}/no_decay"
        group = groups.setdefault(key, {"name": key, "params": [], "lr": lr, "weight_decay": decay})
        group["params"].append(param)
    unused = set(patterns) - {g["name"].split("/")[0] for g in groups.values()}
    if unused:
        raise ValueError(f"module_lr patterns {sorted(unused)} match no trainable parameter in this stage")
    return list(groups.values())

