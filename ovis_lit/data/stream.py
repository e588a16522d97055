"""A deterministic, resumable stream of training batches mixed from several WebDataset shard sets.

Order is a pure function of the seed. Each source (a shard set) is an endless sequence of epochs; epoch e reads a
seed-permuted shard list, split across ranks and dataloader workers, through a shuffle buffer seeded by
(seed, source, epoch, rank, worker). A seeded mixer picks the source of every next sample by weight. Each batch
records where its worker stood (per source: epoch and records taken; mixer: draws taken), so a resumed run replays
the tar streams up to there without decoding anything and continues exactly where the interrupted run was.

webdataset does the shuffle buffers; this module reads the tar shards itself (so that a truncated shard is told
from a complete one), fixes the seeds and keeps the positions. Records reach `to_sample` undecoded: nothing here
decodes a member, so no pickle in a shard ever runs.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from ..rejection import Rejected

log = logging.getLogger(__name__)


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


def _note_skip(counter: Counter, seen: Counter | None, reason: str, exn: Exception | str) -> None:
    """Count a skip; log it (a warning the 1st, 10th, 100th, ... time a reason comes up in this worker)."""
    counter[reason] += 1
    if seen is None:
        log.debug("skipped (%s): %s", reason, exn)
        return
    seen[reason] += 1
    n = seen[reason]
    if str(n).rstrip("0") == "1":  # 1, 10, 100, ...
        unexpected = isinstance(exn, Exception) and not isinstance(exn, Rejected)
        log.warning("data: skipped %d so far for %s (this worker); latest: %s", n, reason, exn,
                    exc_info=unexpected and n == 1)
    else:
        log.debug("skipped (%s): %s", reason, exn)


def _counting_handler(
    counter: Counter, default_reason: str | None = None, seen: Counter | None = None
) -> Callable[[Exception], bool]:
    """A webdataset exception handler that counts and carries on. Rejected counts as its reason; any other
    exception as `default_reason`, or (None) as `error_<ExceptionType>` so that a bug is not taken for bad data."""

    def handler(exn: Exception) -> bool:
        if isinstance(exn, Rejected):
            reason = exn.reason
        else:
            reason = default_reason or f"error_{type(exn).__name__}"
        _note_skip(counter, seen, reason, exn)
        return True  # keep going

    return handler


# ------------------------------------------------------------------------------------------------- shard reading
MAX_MEMBER_BYTES = 2**28  # a member larger than this (256 MiB) is not read into memory; its record is dropped


class _Scan:
    """What the header reader met since the last valid header: how many blocks that were none ("Z": all zero,
    "I": not a valid header), the kinds of the first two, and whether any was invalid; and the gaps of such blocks
    it stepped over before a valid header. See _ScanningTarInfo."""

    def __init__(self):
        self.blocks = 0
        self.first = ""  # the kinds of the first two blocks since the last header: "", "Z", "ZZ", "I", "ZI", ...
        self.invalid = False
        self.lost_name: str | None = None  # the name in the broken header opening the current gap, when readable
        self.gap: tuple[str | None, int] | None = None  # the gap before the header just read: (lost name, blocks)
        self.headers = 0

    def block(self, kind: str, buf: bytes) -> None:
        if self.blocks == 0 and kind == "I":
            self.lost_name = _header_name(buf)
        self.blocks += 1
        self.first = (self.first + kind)[:2]
        self.invalid = self.invalid or kind == "I"

    def header(self) -> None:
        self.headers += 1
        if self.blocks:
            self.gap = (self.lost_name if self.first[0] == "I" else None, self.blocks)
        self.blocks, self.first, self.invalid, self.lost_name = 0, "", False, None

    def take_gap(self) -> tuple[str | None, int] | None:
        gap, self.gap = self.gap, None
        return gap

    def tail(self) -> tuple[str, str | None]:
        """How the archive ended: ("clean", _) with its end-of-archive marker (zero blocks; a file that stops
        after the first, or bytes after the two that are no header, are tolerated as tar tolerates them), ("cut", _)
        without one, ("gap", lost name) when no valid header followed a broken one."""
        if self.first == "ZZ" or (self.first == "Z" and not self.invalid):
            return "clean", None
        if self.invalid:
            return "gap", self.lost_name if self.first[0] == "I" else None
        return "cut", None


def _header_name(buf: bytes) -> str | None:
    """The member name in a header block that failed its checks, if it reads as a plausible name (a checksum or
    size field broken, the name intact); None for garbage."""
    raw = buf[:100].split(b"\0", 1)[0]
    prefix = buf[345:500].split(b"\0", 1)[0] if buf[257:262] == b"ustar" else b""
    try:
        name = ((prefix + b"/" if prefix else b"") + raw).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name if name and name.isprintable() and _split_name(name)[0] is not None else None


class _ScanningTarInfo(tarfile.TarInfo):
    """Reads headers for a TarFile opened with ignore_zeros=True. tarfile then steps over a block that is not a
    valid header one block at a time (GNU tar's --ignore-zeros), which resynchronises the reader on the next valid
    header after a broken one; this records every such block on the TarFile (`tar.scan`, a _Scan) so that the
    records around it can be dropped and counted. Zero blocks are stepped over too and the file is read to its end
    (an intact shard has only zero padding after its end-of-archive marker, so it reads exactly as webdataset
    reads it; a header zeroed mid-shard is then not taken for the end). In stream mode without ignore_zeros
    tarfile ends quietly on an invalid header, dropping the rest of the shard."""

    @classmethod
    def fromtarfile(cls, tar):
        scan = tar.__dict__.setdefault("scan", _Scan())
        buf = tar.fileobj.read(tarfile.BLOCKSIZE)
        try:
            info = cls.frombuf(buf, tar.encoding, tar.errors)
        except tarfile.EOFHeaderError:
            scan.block("Z", buf)
            raise
        except tarfile.InvalidHeaderError:
            scan.block("I", buf)
            raise
        info.offset = tar.fileobj.tell() - tarfile.BLOCKSIZE
        scan.header()
        return info._proc_member(tar)


def _split_name(name: str) -> tuple[str | None, str | None]:
    """webdataset's key/suffix split: the key ends at the first dot of the file name."""
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (match.group(1), match.group(2)) if match else (None, None)


def _lost_key(name: str | None) -> str | None:
    return _split_name(name)[0] if name else None


def _shard_records(url: str, counter: Counter, seen: Counter | None, max_member: int) -> Iterator[dict]:
    from webdataset.gopen import gopen

    try:
        stream = gopen(url, "rb")
    except Exception as exn:
        _note_skip(counter, seen, "bad_shard", f"{url}: {type(exn).__name__}: {exn}")
        return
    current: dict | None = None
    bad_record = None  # the reason the current record is dropped

    def finish(record: dict | None, reason: str | None) -> Iterator[dict]:
        if record is not None:
            if reason:
                _note_skip(counter, seen, reason, f"{url}: {record['__key__']}")
            else:
                yield record

    try:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|*", tarinfo=_ScanningTarInfo, ignore_zeros=True)
        except Exception as exn:
            _note_skip(counter, seen, "bad_shard", f"{url}: {type(exn).__name__}: {exn}")
            return
        scan = tar.__dict__.setdefault("scan", _Scan())
        failed = False
        try:
            for info in tar:
                tar.members = []  # stream mode keeps every header otherwise
                gap = scan.take_gap()
                key, suffix = _split_name(info.name)
                if gap is not None:
                    # A broken header and its member's data were stepped over. The lost member belonged to the
                    # record being read, or the next one, or a record of its own: with its name readable, the record
                    # of its key is dropped; without, both neighbours are (either may be incomplete).
                    lost = _lost_key(gap[0])
                    log.debug("%s: stepped over %d blocks (a broken header, lost member %r)", url, gap[1], gap[0])
                    if current is not None and (lost is None or lost == current["__key__"]):
                        bad_record = bad_record or "bad_tar_header"
                    elif lost is not None and lost != key:
                        _note_skip(counter, seen, "bad_tar_header", f"{url}: {gap[0]} (its header is broken)")
                    starts_record = key is not None and (current is None or key != current["__key__"])
                    if starts_record and (lost is None or lost == key):
                        yield from finish(current, bad_record)
                        current, bad_record = {"__key__": key, "__url__": url}, "bad_tar_header"
                name = info.name
                if not info.isreg() or re.match(r"__[^/]*__($|/)", name):
                    continue  # webdataset's rule: metadata such as __index__ is not a record
                if key is None:
                    continue
                suffix = suffix.lower()
                if current is None or key != current["__key__"]:
                    yield from finish(current, bad_record)
                    current, bad_record = {"__key__": key, "__url__": url}, None
                if info.size > max_member:
                    bad_record = bad_record or "member_too_large"
                    continue  # never read: tarfile skips its data
                if suffix in current:
                    _note_skip(counter, seen, "duplicate_member", f"{url}: {name} (kept the first)")
                    continue
                current[suffix] = tar.extractfile(info).read()
        except Exception as exn:  # cut inside a member's data, a bad gzip stream, ...
            log.debug("%s: %s", url, exn)
            failed = True
        end, lost_name = ("cut", None) if failed else scan.tail()
        if scan.headers == 0 and end != "clean":
            _note_skip(counter, seen, "bad_shard", f"{url}: no valid tar header")  # not a tar (or empty)
        elif end == "clean":
            yield from finish(current, bad_record)
        elif end == "gap":  # a broken header with no valid one after it: the rest of the shard is unreadable
            lost = _lost_key(lost_name)
            if current is not None and (lost is None or lost == current["__key__"]):
                yield from finish(current, bad_record or "bad_tar_header")
            else:
                yield from finish(current, bad_record)
            if lost is None or current is None or lost != current["__key__"]:
                # what followed the broken header: at least one record, how many cannot be told
                _note_skip(counter, seen, "bad_tar_header", f"{url}: unreadable from a broken header to its end")
        else:  # the record being read when the shard ended may be incomplete: dropped with the rest
            last = current["__key__"] if current else None
            _note_skip(counter, seen, "truncated_shard", f"{url}: ends early (dropped the record it ended in: {last})")
    finally:
        try:
            stream.close()  # a `pipe:` url's command that failed raises here (its output was counted above)
        except Exception as exn:
            log.warning("closing %s: %s", url, exn)


def read_shards(
    urls, counter: Counter, seen: Counter | None = None, max_member: int = MAX_MEMBER_BYTES
) -> Iterator[dict]:
    """Records ({"__key__", "__url__", suffix: bytes}) of tar shards, grouped as webdataset groups them, never
    raising for a broken shard. A shard that cannot be opened or is not a tar counts `bad_shard`; a shard that
    ends early (cut inside a member, or without its end-of-archive block) counts `truncated_shard`, keeps the
    records before the one being read and drops that one (it may be incomplete); a record with a member over
    `max_member` bytes counts `member_too_large`; a repeated member name counts `duplicate_member`.

    A broken header (bad checksum, garbage, zeroed) in the middle of a shard does not end it: the reader steps
    over it block by block to the next valid header and goes on. What the broken header held is lost and counted
    as `bad_tar_header`: the record it belonged to (named by the broken header when its name is readable;
    otherwise the records on both sides of it, either of which may be incomplete, each count one); when no valid
    header follows, one more for the unreadable rest (it may have held several records)."""
    for url in urls:
        yield from _shard_records(url, counter, seen, max_member)


class BatchStream(IterableDataset):
    """Endless (train) or single-pass (validation) stream of collated batches.

    `to_sample(record)` turns a WebDataset record into a model sample (or raises Rejected);
    `collate(samples)` makes a batch dict. Each batch carries `stream`: its worker's position after it, and
    `skipped`: {reason: count} of the samples that worker dropped since its previous batch. Records reach
    `to_sample` raw (member bytes): decoding is its job.

    What a batch's `skipped` counts, exactly: the records its worker drew and dropped (to_sample refused them)
    after its previous batch's last sample and up to this batch's last sample, plus the shard-level losses
    (`read_shards`: unreadable or truncated shards, broken headers, oversized members) its reader met in that
    time; the reader runs ahead of the batches by at most the shuffle buffer. The last batch of a single pass also
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
        rank, world = rank_world()
        worker = self._logical_worker()
        self.skipped: Counter = Counter()
        self._seen: Counter = Counter()  # skips per reason in this worker since it started (for the log)
        position = self.state.workers.get(worker, WorkerPosition())
        current = WorkerPosition({k: list(v) for k, v in position.sources.items()}, position.draws)
        # Records stay undecoded until `to_sample`, which decodes only what it uses (never a pickle).
        to_samples = wds.map(self._sample, handler=_counting_handler(self.skipped, None, self._seen))
        batch: list = []
        # A single pass (validation) holds each batch back until the next one is made, so that its last batch can
        # carry the skips met after its last sample (they would otherwise be counted in no batch).
        held: dict | None = None
        self._since_good = 0
        for sample in to_samples(self._guarded(self._mixed(rank, world, worker, position), worker, rank)):
            self._since_good = 0
            meta = sample.meta
            current.sources[meta["source"]] = [meta["epoch"], meta["position"]]
            current.draws = meta["draws"]
            batch.append(sample)
            if len(batch) == self.batch_size:
                out = self._finish(batch, worker, current)
                batch = []
                if self.train:
                    yield out
                else:
                    if held is not None:
                        yield held
                    held = out
        if batch:  # validation keeps its last partial batch
            if held is not None:
                yield held
            held = self._finish(batch, worker, current)
        if held is not None:
            for reason, n in self.skipped.items():  # skips after the last sample of the pass
                held["skipped"][reason] = held["skipped"].get(reason, 0) + n
            self.skipped.clear()
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
        sample.meta.update(
            source=record["__source__"], epoch=record["__epoch__"], position=record["__position__"], draws=record["__draws__"]
        )
        return sample

    def _finish(self, samples: list, worker: int, position: WorkerPosition) -> dict:
        out = self.collate(samples)
        out["stream"] = {"worker": worker, "sources": {k: list(v) for k, v in position.sources.items()},
                         "draws": position.draws}
        out["keys"] = [f"{s.meta['source']}/{s.meta.get('key')}" for s in samples]  # which records (audits, tests)
        out["skipped"] = dict(self.skipped)
        self.skipped.clear()
        return out
