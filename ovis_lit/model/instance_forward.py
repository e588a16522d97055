"""A module's `forward` replaced for the length of a `with` block: how generation's speed-ups (`packed_weights`,
`inplace_mlp`, `lean_decode`) put their code in place.

The replacement is an instance attribute, which shadows the class's `forward` for `module(...)` calls; on exit it is
removed, so the class's forward is back and nothing of it reaches a state dict or a copy of the class. Removal
tolerates a missing attribute (another block on the same module that ended first)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

from torch import nn


@contextlib.contextmanager
def forwards_replaced(replacements: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """While inside, each (module, forward) pair's module runs that forward."""
    patched = []
    try:
        for module, forward in replacements:
            module.forward = forward
            patched.append(module)
        yield
    finally:
        for module in patched:
            vars(module).pop("forward", None)
