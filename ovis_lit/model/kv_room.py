"""A KV cache layer with room to grow: decode steps write their keys and values in place instead of concatenating.

transformers' `DynamicLayer` appends each step's keys and values with `torch.cat`, which copies the whole cache every
step: in the benchmark of `benchmarks/generation_speed.py` (8 prompts of up to 211 positions, 4 layers) that is
2.3 MB a layer and a step, ~35 ms of a batch's ~450 ms of LLM time at 2 threads. `RoomyLayer` keeps the same
tensors as views of a larger buffer: `update` copies only the new positions into the free tail (doubling the buffer
when it is full) and hands attention the filled prefix, the values `DynamicLayer` would hand it.

It is a `DynamicLayer` to the rest of transformers (same attributes, same sequence length, cropping and batch
selection keep working): an operation that replaces `keys` / `values` by tensors that are not a prefix of the buffer
(selecting or repeating rows) makes the next `update` take those tensors as the new buffer's contents.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class RoomyLayer(DynamicLayer):
    """`DynamicLayer` whose `keys` / `values` [B, H, n, D] are the first n positions of [B, H, capacity, D] buffers."""

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int):
        """Over buffers whose first `length` positions already hold the cache (no copy: the packed prefill lays its
        keys and values out in them)."""
        super().__init__()
        self.device, self.is_initialized = key_buffer.device, True
        self._hold((key_buffer, value_buffer), length)

    @classmethod
    def with_room(cls, keys: torch.Tensor, values: torch.Tensor, room: int) -> RoomyLayer:
        """A layer holding copies of `keys` / `values` [B, H, n, D], with room for `room` more positions."""
        n = keys.shape[-2]
        return cls(*_copied_into_buffers(keys, values, n + max(room, 1)), n)

    def _hold(self, buffers: tuple[torch.Tensor, torch.Tensor], n: int) -> None:
        """Keep `buffers`; `self.keys` / `self.values` view their first n positions."""
        self._buffers = buffers
        self.keys, self.values = buffers[0][..., :n, :], buffers[1][..., :n, :]

    def _views_buffers(self) -> bool:
        """Whether `keys` / `values` are still prefixes of the buffers (cropping keeps them so; selecting rows not)."""
        return all(
            t.data_ptr() == b.data_ptr() and t.shape[:-2] == b.shape[:-2] and t.stride() == b.stride()
            for t, b in zip((self.keys, self.values), self._buffers)
        )

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:  # after `reset`: start again from these positions
            self.device, self.is_initialized = key_states.device, True
            n = key_states.shape[-2]
            self._hold(_copied_into_buffers(key_states, value_states, 2 * n), n)
            return self.keys, self.values
        n, new = self.keys.shape[-2], key_states.shape[-2]
        capacity = self._buffers[0].shape[-2]
        if not self._views_buffers() or n + new > capacity:
            self._buffers = _copied_into_buffers(self.keys, self.values, max(2 * capacity, n + new))
        keys, values = self._buffers
        keys[..., n: n + new, :].copy_(key_states)
        values[..., n: n + new, :].copy_(value_states)
        self._hold(self._buffers, n + new)
        return self.keys, self.values

    def reset(self) -> None:
        super().reset()
        self._buffers = None


def _copied_into_buffers(keys: torch.Tensor, values: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """New [B, H, capacity, D] buffers whose first positions hold copies of `keys` / `values` [B, H, n, D]."""
    buffers = []
    for t in (keys, values):
        buffer = t.new_empty(*t.shape[:-2], capacity, t.shape[-1])
        buffer[..., : t.shape[-2], :].copy_(t)
        buffers.append(buffer)
    return buffers[0], buffers[1]


def cache_over(buffers: list[tuple[torch.Tensor, torch.Tensor]], config, length: int) -> DynamicCache:
    """A `DynamicCache` of `RoomyLayer`s over each layer's (key buffer, value buffer), `length` positions filled."""
    cache = DynamicCache(config=config)
    cache.layers = [RoomyLayer(keys, values, length) for keys, values in buffers]
    return cache
