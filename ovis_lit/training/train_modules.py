"""The original recipe's `train_modules` syntax ("name|name:lr|...") as a stage's trainable list + per-module LRs.

The original scripts say what a stage trains, and at which learning rate, in one string, e.g. Ovis2.5's
`--train_modules "visual_tokenizer.head:1e-4|vte:1e-4|visual_tokenizer.vit.last_block:5e-5"`: modules named
without a rate train at the stage's LR. Here the same string (as `stage.train_modules` or `recipe.<stage>.train_modules`)
becomes the stage's `trainable` list and adds its rates to `module_lr`; `module_lr` itself may also be written
"name:lr|name:lr". Names are those of training/freezing.py, the original's spellings included.
"""

from __future__ import annotations

from typing import Any


def parse_train_modules(text: str, need_lr: bool = False) -> dict[str, float | None]:
    """"a|b:1e-4" -> {"a": None, "b": 1e-4} (spaces ignored, as the original does). `need_lr`: every name needs a
    rate (a `module_lr` string)."""
    modules: dict[str, float | None] = {}
    for item in str(text).replace(" ", "").split("|"):
        name, sep, rate = item.partition(":")
        if not name or ":" in rate or (sep and not rate):
            raise ValueError(f"bad train_modules entry {item!r} in {text!r}: write name or name:lr, joined by |")
        if name in modules:
            raise ValueError(f"{name!r} appears twice in {text!r}")
        if need_lr and not sep:
            raise ValueError(f"module_lr entry {item!r} has no learning rate (write {name}:<lr>)")
        try:
            modules[name] = float(rate) if sep else None
        except ValueError:
            raise ValueError(f"bad learning rate {rate!r} for {name!r} in {text!r}") from None
        if sep and not modules[name] > 0:
            raise ValueError(f"the learning rate of {name!r} must be positive, got {rate}")
    return modules


def apply_train_modules(stage: dict[str, Any]) -> dict[str, Any]:
    """Resolve a stage's `train_modules` string and a string `module_lr` into `trainable` and a `module_lr` dict
    (in place; returns the stage)."""
    module_lr = stage.get("module_lr") or {}
    if isinstance(module_lr, str):
        module_lr = parse_train_modules(module_lr, need_lr=True)
    module_lr = dict(module_lr)
    if stage.get("train_modules"):
        modules = parse_train_modules(stage["train_modules"])
        stage["trainable"] = list(modules)
        module_lr.update({name: lr for name, lr in modules.items() if lr is not None})
    stage["module_lr"] = module_lr
    return stage
