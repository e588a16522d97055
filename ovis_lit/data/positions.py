"""Where a stream stands: the shard sets it mixes, this process's place among the ranks, and the positions a
resumed run continues from (per logical worker: each source's epoch and records taken, and the mixer's draws)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Source:
    name: str
    urls: tuple[str, ...]
    weight: float = 1.0


def rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass
class WorkerPosition:
    """Where one logical worker stands: per source [epoch, records taken in that epoch]; mixer draws taken."""

    sources: dict[str, list[int]] = field(default_factory=dict)
    draws: int = 0


@dataclass
class StreamState:
    """Resume state of a loader: a position per logical worker, and which worker serves the next batch."""

    workers: dict[int, WorkerPosition] = field(default_factory=dict)
    next_worker: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": {str(w): {"sources": p.sources, "draws": p.draws} for w, p in self.workers.items()},
            "next_worker": self.next_worker,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "StreamState":
        if not d:
            return cls()
        workers = {int(w): WorkerPosition({k: list(v) for k, v in p["sources"].items()}, int(p["draws"]))
                   for w, p in d["workers"].items()}
        return cls(workers, int(d["next_worker"]))
