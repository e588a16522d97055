"""A deterministic, resumable stream of training batches mixed from several WebDataset shard sets.

Order is a pure function of the seed. Each source (a shard set) is an endless sequence of epochs; epoch e reads a
seed-permuted shard list, split across ranks and dataloader workers, through a shuffle buffer seeded by
(seed, source, epoch, rank, worker). A seeded mixer picks the source of every next sample by weight. Each batch
records where its worker stood (per source: epoch and records taken; mixer: draws taken), so a resumed run replays
the tar streams up to there without decoding anything and continues exactly where the interrupted run was.

webdataset does the shuffle buffers; shards.py reads the tar shards (so that a truncated shard is told from a
complete one), positions.py holds the positions, batching.py groups samples into batches (a sample count or a token
budget), skips.py counts what is dropped; this module fixes the seeds and drives them. Records reach `to_sample`
undecoded: nothing here decodes a member, so no pickle in a shard ever runs.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from typing import Any, Callable, Iterator

import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from ..rejection import Rejected
from .batching import Batching, FixedCount, TokenBudget, sample_tokens
from .positions import Source, StreamState, WorkerPosition, rank_world
from .shards import MAX_MEMBER_BYTES, read_shards
from .skips import counting_handler, note_skip

# what other modules import from here (the stream's parts live in their own modules)
__all__ = ["BatchStream", "MAX_MEMBER_BYTES", "Source", "StreamState", "WorkerPosition",
           "counting_handler", "note_skip", "rank_world", "read_shards"]
_counting_handler = counting_handler  # the name tests and older callers use

log = logging.getLogger(__name__)


class BatchStream(IterableDataset):
    """Endless (train) or single-pass (validation) stream of collated batches.

    `to_sample(record)` turns a WebDataset record into a model sample (or raises Rejected);
    `collate(samples)` makes a batch dict. A batch holds `batch_size` samples, or with `token_budget` as many as
    fit in that many tokens (visual + text; see data/batching.py); a sample over the budget on its own is a
    counted skip, `over_token_budget`. Each batch carries `stream`: its worker's position after it, and
    `skipped`: {reason: count} of the samples that worker dropped since its previous batch. Records reach
    `to_sample` raw (member bytes): decoding is its job.

    What a batch's `skipped` counts, exactly: the records its worker drew and dropped (to_sample refused them)
    after its previous batch's last sample and up to this batch's last sample, plus the shard-level losses
    (`read_shards`: unreadable or truncated shards, broken headers, oversized members) its reader met in that
    time (up to the moment that last sample was made, even when the batch is closed later, by a sample that did
    not fit); the reader runs ahead of the batches by at most the shuffle buffer. The last batch of a single pass also
    carries the skips after its last sample. So summing the `skipped` of the batches a stage consumed counts the
    skips of the data it consumed, and nothing from batches the DataLoader prefetched but the stage never used
    (a resumed run meets those again, and counts them then).
    """

    max_consecutive_skips = 100_000  # a training stream that only skips fails loudly instead of hanging

    def __init__(
        self,
        sources: list[Source],
        to_sample: Callable[[dict], Any],
        collate: Callable[[list], dict],
        batch_size: int | None,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        train: bool = True,
        state: StreamState | None = None,
        num_workers: int = 0,
        token_budget: int | None = None,
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
        self.token_budget = token_budget
        if token_budget is None and batch_size is None:
            raise ValueError("a stream needs a batch_size or a token_budget")
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
        records = read_shards(mine, self.skipped, self._seen)
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
            # Shard-level skips met while replaying were counted before the interruption (they are in the
            # checkpoint): the counters are put back as they were once the replay is over.
            replay_counts = (Counter(self.skipped), Counter(self._seen)) if e == epoch and first > 0 else None
            for pos, record in enumerate(self._epoch_records(source, e, rank, world, worker)):
                taken += 1
                if e == epoch and pos < first:
                    if pos == first - 1 and replay_counts is not None:
                        for counter, before in zip((self.skipped, self._seen), replay_counts):
                            counter.clear()
                            counter.update(before)
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
        drawn = self._drawn
        if len(self.sources) == 1 or not self.train:
            for source in self.sources:  # validation: every source once, in order
                for record in streams[source.name]:
                    drawn.sources[source.name] = [record["__epoch__"], record["__position__"]]
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
            record = next(streams[name])
            # every drawn record moves its source's position, a skipped one too: a resumed run must not read it
            # again (the mixer's next draws would then take other records than the interrupted run's)
            drawn.sources[name], drawn.draws = [record["__epoch__"], record["__position__"]], draws
            yield {**record, "__draws__": draws}

    def batching(self) -> Batching:
        return TokenBudget(self.token_budget) if self.token_budget is not None else FixedCount(self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        rank, world = rank_world()
        worker = self._logical_worker()
        self.skipped: Counter = Counter()  # this worker's skips since it started
        self._handed: Counter = Counter()  # the part of them the batches made so far carry
        self._seen: Counter = Counter()  # skips per reason in this worker since it started (for the log)
        position = self.state.workers.get(worker, WorkerPosition())
        # where this worker stands: updated by `_mixed` as it draws each record (so, lazily, when a sample comes out
        # it holds the position just after that sample's record)
        self._drawn = WorkerPosition({k: list(v) for k, v in position.sources.items()}, position.draws)
        self._batching = batching = self.batching()
        # Records stay undecoded until `to_sample`, which decodes only what it uses (never a pickle).
        to_samples = wds.map(self._sample, handler=counting_handler(self.skipped, None, self._seen))
        # A single pass (validation) holds each batch back until the next one is made, so that its last batch can
        # carry the skips met after its last sample (they would otherwise be counted in no batch).
        held: dict | None = None
        self._since_good = 0
        for sample in to_samples(self._guarded(self._mixed(rank, world, worker, position), worker, rank)):
            self._since_good = 0
            # the stream's position and skips as of this sample: what its batch records if it is the batch's last
            at = WorkerPosition({k: list(v) for k, v in self._drawn.sources.items()}, self._drawn.draws)
            for done in batching.add((sample, (at, Counter(self.skipped)))):
                out = self._finish(done, worker)
                if self.train:
                    yield out
                else:
                    if held is not None:
                        yield held
                    held = out
        last = batching.flush()
        if last:  # validation keeps its last partial batch
            if held is not None:
                yield held
            held = self._finish(last, worker)
        if held is not None:
            for reason, n in (self.skipped - self._handed).items():  # skips after the last sample of the pass
                held["skipped"][reason] = held["skipped"].get(reason, 0) + n
            yield held
        elif self.skipped:  # a pass that made no batch: nothing can carry its skips to the trainer
            log.warning("data worker %d of rank %d made no batch; it skipped %s", worker, rank, dict(self.skipped))

    def _guarded(self, records: Iterator[dict], worker: int, rank: int) -> Iterator[dict]:
        """Fails loudly when a training stream only skips (it would otherwise hang, never making a batch)."""
        for record in records:
            if self.train and self._since_good >= self.max_consecutive_skips:
                raise RuntimeError(
                    f"data worker {worker} of rank {rank} skipped {self._since_good} records in a row (since it "
                    f"started: {dict(self._seen)}): can this configuration read the data?"
                )
            self._since_good += 1
            yield record

    def _sample(self, record: dict):
        sample = self.to_sample(record)
        if not self._batching.admits(sample):
            raise Rejected("over_token_budget", f"{record.get('__key__')}: {sample_tokens(sample)} tokens, the "
                             f"budget is {self.token_budget} per batch")
        sample.meta.update(
            source=record["__source__"], epoch=record["__epoch__"], position=record["__position__"], draws=record["__draws__"]
        )
        return sample

    def _finish(self, items: list, worker: int) -> dict:
        """The batch of (sample, (position, skips)) items: it records the stream as of its last sample."""
        samples = [sample for sample, _ in items]
        position, skipped = items[-1][1]
        out = self.collate(samples)
        out["stream"] = {"worker": worker, "sources": {k: list(v) for k, v in position.sources.items()},
                         "draws": position.draws}
        out["keys"] = [f"{s.meta['source']}/{s.meta.get('key')}" for s in samples]  # which records (audits, tests)
        # the skips up to its last sample that no earlier batch carries (those after it belong to the next batch)
        out["skipped"] = dict(skipped - self._handed)
        self._handed = skipped
        return out
