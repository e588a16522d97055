"""A deterministic, resumable stream of training batches mixed from several WebDataset shard sets.

Order is a pure function of the seed. Each source (a shard set) is an endless sequence of epochs; epoch e reads a
seed-permuted shard list, split across ranks and dataloader workers, through a shuffle buffer seeded by
(seed, source, epoch, rank, worker). A seeded mixer picks the source of every next sample by weight. Each batch
records where its worker stood (per source: epoch and records taken; mixer: draws taken), so a resumed run replays
the tar streams up to there without decoding anything and continues exactly where the interrupted run was.

webdataset does the tar reading, the shuffle buffers and the decoding; this module fixes their seeds and keeps
the positions.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

log = logging.getLogger(__name__)


class SkipSample(Exception):
    """A sample that cannot be used; `reason` is what the run's skip counters count it as."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Source:
    name: str
    urls: tuple[str, ...]
    weight: float = 1.0


def _rank_world() -> tuple[int, int]:
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


def _counting_handler(counter: Counter, default_reason: str) -> Callable[[Exception], bool]:
    def handler(exn: Exception) -> bool:
        reason = exn.reason if isinstance(exn, SkipSample) else default_reason
        counter[reason] += 1
        log.debug("skipped a sample (%s): %s", reason, exn)
        return True  # keep going

    return handler


class BatchStream(IterableDataset):
    """Endless (train) or single-pass (validation) stream of collated batches.

    `to_sample(record)` turns a decoded WebDataset record into a model sample (or raises SkipSample);
    `collate(samples)` makes a batch dict. Each batch carries `stream`: its worker's position after it, and
    `skipped`: {reason: count} of the samples that worker dropped since its previous batch.
    """

    def __init__(
        self,
        sources: list[Source],
        to_sample: Callable[[dict], Any],
        collate: Callable[[list], dict],
        batch_size: int,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        train: bool = True,
        state: StreamState | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        sources = [s for s in sources if s.urls]
        if not sources:
            raise ValueError("no shards to read")
        if any(s.weight <= 0 for s in sources):
            raise ValueError("source weights must be positive")
        self.sources = sources
        self.to_sample = to_sample
        self.collate = collate
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.train = train
        self.state = state or StreamState()
        self.num_workers = max(1, num_workers)

    # -------------------------------------------------------------------------------------------- records
    def _logical_worker(self) -> int:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        # Rotate so that after a resume the first batch comes from the stream that was due next.
        return (worker + self.state.next_worker) % self.num_workers

    def _epoch_records(self, source: Source, epoch: int, rank: int, world: int, worker: int) -> Iterator[dict]:
        """Raw (undecoded) records of one epoch of one source for this (rank, worker)."""
        slots = world * self.num_workers
        slot = rank * self.num_workers + worker
        urls = list(source.urls)
        if self.train:
            random.Random(f"{self.seed}-{source.name}-shards-{epoch}").shuffle(urls)
        by_shard = len(urls) >= slots
        mine = urls[slot::slots] if by_shard else urls  # fewer shards than readers: split by record instead
        records = wds.tarfile_to_samples(handler=_counting_handler(self.skipped, "bad_shard"))({"url": u} for u in mine)
        if not by_shard:
            records = itertools.islice(records, slot, None, slots)
        if self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}-{source.name}-samples-{epoch}-{rank}-{worker}")
            records = wds.shuffle(bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(records)
        return records

    def _source_records(self, source: Source, start: list[int], rank: int, world: int, worker: int) -> Iterator[dict]:
        """All records of a source from `start` = [epoch, records taken], each tagged with its position."""
        epoch, first = start
        epochs = itertools.count(epoch) if self.train else [0]
        for e in epochs:
            taken = 0
            for pos, record in enumerate(self._epoch_records(source, e, rank, world, worker)):
                taken += 1
                if e == epoch and pos < first:
                    continue  # replaying a resumed stream: read, never decoded
                yield {**record, "__source__": source.name, "__epoch__": e, "__position__": pos + 1}
            if self.train and taken == 0:
                raise RuntimeError(
                    f"source {source.name!r} gave data worker {worker} of rank {rank} no record in epoch {e}: "
                    f"too few or broken shards for {world * self.num_workers} readers?"
                )

    def _mixed(self, rank: int, world: int, worker: int, position: WorkerPosition) -> Iterator[dict]:
        streams = {
            s.name: self._source_records(s, position.sources.get(s.name, [0, 0]), rank, world, worker)
            for s in self.sources
        }
        if len(self.sources) == 1 or not self.train:
            for source in self.sources:  # validation: every source once, in order
                for record in streams[source.name]:
                    yield {**record, "__draws__": 0}
            return
        mixer = random.Random(f"{self.seed}-mixer-{rank}-{worker}")
        names = [s.name for s in self.sources]
        weights = [s.weight for s in self.sources]
        for _ in range(position.draws):  # replay the mixer's earlier choices
            mixer.choices(names, weights)
        draws = position.draws
        while True:
            name = mixer.choices(names, weights)[0]
            draws += 1
            yield {**next(streams[name]), "__draws__": draws}

    def __iter__(self) -> Iterator[dict]:
        rank, world = _rank_world()
        worker = self._logical_worker()
        self.skipped: Counter = Counter()
        position = self.state.workers.get(worker, WorkerPosition())
        current = WorkerPosition({k: list(v) for k, v in position.sources.items()}, position.draws)
        decode = wds.decode("pil", handler=_counting_handler(self.skipped, "decode_error"))
        to_samples = wds.map(self._sample, handler=_counting_handler(self.skipped, "invalid_sample"))
        batch: list = []
        for sample in to_samples(decode(self._mixed(rank, world, worker, position))):
            meta = sample.meta
            current.sources[meta["source"]] = [meta["epoch"], meta["position"]]
            current.draws = meta["draws"]
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self._finish(batch, worker, current)
                batch = []
        if batch:  # validation keeps its last partial batch
            yield self._finish(batch, worker, current)

    def _sample(self, record: dict):
        sample = self.to_sample(record)
        sample.meta.update(
            source=record["__source__"], epoch=record["__epoch__"], position=record["__position__"], draws=record["__draws__"]
        )
        return sample

    def _finish(self, samples: list, worker: int, position: WorkerPosition) -> dict:
        out = self.collate(samples)
        out["stream"] = {"worker": worker, "sources": {k: list(v) for k, v in position.sources.items()},
                         "draws": position.draws}
        out["skipped"] = dict(self.skipped)
        self.skipped.clear()
        return out
