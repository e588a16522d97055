"""What every converter shares: validation, sample records, size-bounded shard writing, parallel work, the report.

A converter turns input entries into WebDataset records in the layout `ovis_lit.data.samples` reads:
`<key>.json` ({"id", "conversations", "images"} or {"id", "caption", "caption_template"?}) plus one member per
image, `<key>.<i>.<ext>` (the original file's bytes, never re-encoded), named in order by the JSON's "images".
Entries that would be skipped in training are rejected here instead, under the reason training counts them as
(the checks are `ovis_lit.data.validation`'s, which training runs too), each listed in `<prefix>-rejected.jsonl`
and counted in `<prefix>-report.json`. Rejection reasons only a converter has: `missing_image`,
`bad_image_path` (outside the image root), `not_a_file` (a FIFO, device or directory), `image_too_large`
(bytes), `too_many_images`, `empty_answer`, `too_long` (characters), `bad_encoding` (not UTF-8, with its line).

Images are stored as their original bytes: their EXIF orientation is not applied (as in training, see
`processing.image.open_image`); the report counts those that declare one (`exif_rotated`).

A conversion that stops (an exception, Ctrl-C, SIGTERM) leaves no `.tmp` shard behind.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ...constants import IMAGE_TOKEN
from ...processing.image import MAX_IMAGE_PIXELS, ImageRejected, exif_orientation, open_image
from ..stream import SkipSample
from ..validation import check_caption as check_caption_sample
from ..validation import check_conversation, check_image_count, turn_role

log = logging.getLogger(__name__)

# PIL format -> the member extension the training reader recognises (samples.IMAGE_EXTENSIONS)
FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                     "TIFF": "tiff"}
EXAMPLES_PER_REASON = 20
MAX_IMAGE_BYTES = 2**27  # 128 MiB per image file: more than any image within MAX_IMAGE_PIXELS needs, compressed


class Reject(Exception):
    """An input entry that is not converted; `reason` is what the report counts it as."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    @classmethod
    def of(cls, exn: SkipSample | ImageRejected) -> "Reject":
        """The same rejection as training's SkipSample / the image checks' ImageRejected, detail kept."""
        message = str(exn)
        return cls(exn.reason, message[len(exn.reason) + 2:] if message.startswith(f"{exn.reason}: ") else "")


@dataclass
class Limits:
    """What a converted sample must satisfy (besides decoding)."""

    max_chars: int = 200_000  # characters of text (conversation or caption); longer entries are rejected
    max_images: int = 32  # images per sample
    max_image_pixels: int | None = MAX_IMAGE_PIXELS  # per image (a decompression-bomb guard)
    max_image_bytes: int | None = MAX_IMAGE_BYTES  # per image file read (or embedded)
    add_missing_image_token: bool = False  # LLaVA data that leaves `<image>` out: put one per image first
    allows_system: bool = True  # False for a chat format without a system turn (Gemma): such samples rejected


@dataclass
class Converted:
    """A validated sample: its JSON and its image members, ready to be written."""

    index: int
    meta: dict[str, Any]
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (member suffix, bytes), in order
    exif_rotated: int = 0  # images whose EXIF orientation is not "as stored" (kept as stored; counted)
    json_bytes: bytes = b""  # the encoded meta, made in the worker (so that an unencodable one is a rejection)


# ---------------------------------------------------------------------------------------------------- checks
def entry_id(entry: Any, index: int) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("id"), (str, int)):
        return str(entry["id"])
    return str(index)


def image_member(data: bytes, position: int, limits: Limits, what: str) -> tuple[str, bytes, bool]:
    """Validate image bytes (within the byte limit, they must decode completely, within the pixel limit, and
    convert to RGB) and name their member by the format PIL found. Other formats are stored re-encoded as PNG.
    Returns (member suffix, bytes, whether its EXIF orientation is not "as stored")."""
    if limits.max_image_bytes is not None and len(data) > limits.max_image_bytes:
        raise Reject("image_too_large", f"{what}: {len(data)} bytes > {limits.max_image_bytes}")
    try:
        image = open_image(data, limits.max_image_pixels)
    except ImageRejected as exn:
        raise Reject(exn.reason, f"{what}: {exn}") from exn
    from PIL import Image

    header = Image.open(io.BytesIO(data))  # header only: the format and the EXIF orientation
    ext = FORMAT_EXTENSIONS.get(header.format or "")
    rotated = exif_orientation(header) != 1
    if ext is None:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data, ext = buf.getvalue(), "png"
    return f"{position}.{ext}", data, rotated


def check_turns(conversations: Any, n_images: int, limits: Limits, key: str) -> list[dict]:
    """Training's checks on the conversation (`validation`), plus the converter's limits. Returns the turns to
    store (with `<image>` marks added first when `limits.add_missing_image_token` asks for them)."""
    try:
        check_conversation(conversations, key, limits.allows_system)
        turns = [dict(t) for t in conversations]
        marks = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
        first_user = next((t for t in turns if turn_role(t) == "human"), None)
        if marks == 0 and n_images and limits.add_missing_image_token and first_user is not None:
            first_user["value"] = f"{IMAGE_TOKEN}\n" * n_images + first_user["value"]
        check_image_count({"conversations": turns}, n_images, key)
    except SkipSample as exn:
        raise Reject.of(exn) from exn
    if not any(t["value"].strip() for t in turns if turn_role(t) == "gpt"):
        raise Reject("empty_answer", key)
    chars = sum(len(t["value"]) for t in turns)
    if chars > limits.max_chars:
        raise Reject("too_long", f"{key}: {chars} characters > {limits.max_chars}")
    return turns


def check_caption(caption: Any, template: Any, limits: Limits, key: str) -> tuple[str, str | None]:
    """Training's checks on a caption and its template (`validation`), plus the converter's length limit."""
    try:
        check_caption_sample(caption, template, key)
    except SkipSample as exn:
        raise Reject.of(exn) from exn
    if len(caption) > limits.max_chars:
        raise Reject("too_long", f"{key}: {len(caption)} characters > {limits.max_chars}")
    return caption, template


# ---------------------------------------------------------------------------------------------------- writing
def safe_name(name: str) -> str:
    """A shard-file / sample-key prefix: no dots (webdataset splits keys at the first dot) and no separators."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "data"


class SplitWriter:
    """Size- and count-bounded shards `<prefix>-<split>-NNNNNN.tar`; a shard gets its final name once complete, so a
    crashed conversion never leaves a complete-looking partial shard."""

    def __init__(self, output: Path, prefix: str, split: str, maxcount: int, maxsize: float):
        self.output, self.prefix, self.split = output, prefix, split
        self.maxcount, self.maxsize = maxcount, maxsize
        self.writer = None
        self.shards: list[str] = []
        self.count = 0

    def _done(self, tmp_name: str) -> None:
        final = tmp_name[: -len(".tmp")]
        os.replace(tmp_name, final)
        self.shards.append(final)

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:  # lazily: an empty split writes no shard
            import webdataset as wds

            pattern = str(self.output / f"{self.prefix}-{self.split}-%06d.tar.tmp")
            self.writer = wds.ShardWriter(pattern, maxcount=self.maxcount, maxsize=self.maxsize, post=self._done,
                                          verbose=0, encoder=False, mtime=0.0)
        self.writer.write(record)
        self.count += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abort(self) -> None:
        """Stop without completing: the open shard is closed and deleted (it keeps its `.tmp` name until then, so
        it is never taken for a complete one); shards already complete stay."""
        writer, self.writer = self.writer, None
        if writer is None:
            return
        tmp = getattr(writer, "fname", None)
        try:
            if getattr(writer, "tarstream", None) is not None:
                writer.tarstream.close()
                writer.tarstream = None
        finally:
            if tmp and tmp.endswith(".tmp") and os.path.exists(tmp):
                os.unlink(tmp)

    def url(self) -> str | None:
        """The brace pattern naming every shard (what conf/data `sources` take)."""
        if not self.shards:
            return None
        last = len(self.shards) - 1
        base = str(self.output / f"{self.prefix}-{self.split}-")
        return f"{base}000000.tar" if last == 0 else f"{base}{{000000..{last:06d}}}.tar"


def encode_meta(meta: dict[str, Any]) -> bytes:
    try:
        return json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exn:  # a lone surrogate, e.g. from a JSON escape "\udc80"
        raise Reject("bad_encoding", f"not valid Unicode text: {exn}") from exn


def to_record(key: str, converted: Converted) -> dict[str, Any]:
    record: dict[str, Any] = {"__key__": key}
    record["json"] = converted.json_bytes or encode_meta(converted.meta)
    for suffix, data in converted.images:
        record[suffix] = data
    return record


def is_val(sample_id: str, fraction: float) -> bool:
    """A stable split: by a hash of the sample's id, so re-running (or adding data) keeps samples on their side."""
    return fraction > 0 and zlib.crc32(sample_id.encode("utf-8")) / 2**32 < fraction


# ----------------------------------------------------------------------------------------------------- running
@dataclass
class Options:
    output: Path
    prefix: str
    workers: int = max(1, (os.cpu_count() or 2) - 1)
    maxcount: int = 10_000  # samples per shard
    maxsize: float = 5e8  # bytes per shard (a shard ends once it has reached this)
    val_fraction: float = 0.0
    progress: bool = True
    overwrite: bool = False
    chunk: int = 1024  # entries handed to the workers at a time (bounds memory on huge inputs)


def _call(job: tuple[Callable[[int, Any], Converted], int, Any]) -> tuple[int, Any, Converted | Reject]:
    fn, index, entry = job
    try:
        converted = fn(index, entry)
        converted.json_bytes = encode_meta(converted.meta)
        return index, None, converted
    except Reject as exn:
        return index, entry_id(entry, index), exn
    except (SkipSample, ImageRejected) as exn:  # training's own checks, called directly
        return index, entry_id(entry, index), Reject.of(exn)
    except Exception as exn:  # a converter bug or an input nobody foresaw: reported, not fatal
        return index, entry_id(entry, index), Reject(f"error_{type(exn).__name__}", str(exn))


@contextmanager
def worker_pool(workers: int) -> Iterator[Any]:
    """`workers` processes (None for in-process work with 1). Made before `sigterm_as_interrupt` is entered, so
    the workers keep SIGTERM's default action: a worker stuck on a lock inherited through fork (which Python-level
    handlers never get to run in) still ends when the pool is terminated."""
    if workers <= 1:
        yield None
        return
    with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
        yield pool


def _pool_map(fn: Callable[[int, Any], Converted], entries: Iterable[Any], pool: Any, workers: int,
              chunk: int) -> Iterator:
    """(index, id, Converted | Reject) in input order, from the pool's processes (in-process without one)."""
    jobs = ((fn, i, e) for i, e in enumerate(entries))
    if pool is None:
        yield from map(_call, jobs)
        return
    while True:
        block = list(itertools.islice(jobs, chunk * workers))
        if not block:
            break
        yield from pool.imap(_call, block, chunksize=max(1, min(64, len(block) // (4 * workers))))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While converting, SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C, so no `.tmp` shard is left.
    A process forked meanwhile (a pool worker replacing a dead one) ends as SIGTERM's default would end it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked worker: die as SIGTERM would have made it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(
    fn: Callable[[int, Any], Converted],
    entries: Iterable[Any],
    options: Options,
    total: int | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert `entries` with `fn(index, entry) -> Converted` (raising Reject), write the shards and the report.
    Returns the report (also written to `<output>/<prefix>-report.json`)."""
    from tqdm import tqdm

    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    prefix = safe_name(options.prefix)
    old = sorted(output.glob(f"{prefix}-train-*.tar*")) + sorted(output.glob(f"{prefix}-val-*.tar*"))
    if old and not options.overwrite:
        raise FileExistsError(f"{output} already has {prefix} shards ({old[0].name}, ...); pass --overwrite")
    for path in old:
        path.unlink()
    writers = {split: SplitWriter(output, prefix, split, options.maxcount, options.maxsize)
               for split in ("train", "val")}
    rejected: Counter = Counter()
    examples: dict[str, list] = {}
    exif_rotated = 0
    started = time.perf_counter()
    n = 0
    rejected_path = output / f"{prefix}-rejected.jsonl"
    try:
        with worker_pool(options.workers) as pool, sigterm_as_interrupt(), open(
            rejected_path, "w", encoding="utf-8"
        ) as rejects, tqdm(
            total=total, disable=not options.progress, desc=f"converting {prefix}", unit="sample", dynamic_ncols=True
        ) as bar:
            for index, sample_id, result in _pool_map(fn, entries, pool, options.workers, options.chunk):
                n += 1
                bar.update()
                if isinstance(result, Reject):
                    rejected[result.reason] += 1
                    row = {"index": index, "id": sample_id, "reason": result.reason, "detail": result.detail}
                    rejects.write(json.dumps(row, ensure_ascii=False) + "\n")
                    if len(examples.setdefault(result.reason, [])) < EXAMPLES_PER_REASON:
                        examples[result.reason].append(row)
                    if n % 256 == 0:
                        bar.set_postfix(rejected=sum(rejected.values()), refresh=False)
                    continue
                exif_rotated += result.exif_rotated
                split = "val" if is_val(str(result.meta.get("id", index)), options.val_fraction) else "train"
                writers[split].write(to_record(f"{prefix}-{index:09d}", result))
            for writer in writers.values():
                writer.close()
    except BaseException:  # an error, Ctrl-C or SIGTERM: the shard being written is incomplete, never renamed
        for writer in writers.values():
            writer.abort()
        raise
    seconds = time.perf_counter() - started
    written = {split: w.count for split, w in writers.items()}
    urls = {split: w.url() for split, w in writers.items() if w.url()}
    report = {
        **(info or {}),
        "output": str(output),
        "prefix": prefix,
        "entries": n,
        "written": written,
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": sum(rejected.values()),
        "rejected_list": str(rejected_path),
        "examples": examples,
        "exif_rotated": exif_rotated,  # images kept as stored although their EXIF asks to rotate/mirror them
        "shards": {split: w.shards for split, w in writers.items()},
        "urls": urls,
        "source_config": {prefix: urls},  # paste under `sources:` of a conf/data file
        "seconds": round(seconds, 2),
        "samples_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    }
    (output / f"{prefix}-report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log.info("%s: %d entries -> %s written, %d rejected %s; shards %s", prefix, n, written,
             report["rejected_total"], report["rejected"], urls)
    return report


# --------------------------------------------------------------------------------------------------------- CLI
def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output")
    g.add_argument("--output", required=True, type=Path, help="directory of the shards and the report")
    g.add_argument("--workers", type=int, default=Options.workers, help="processes (default: CPUs - 1)")
    g.add_argument("--shard-size", type=float, default=500, help="MB per shard (default 500)")
    g.add_argument("--shard-count", type=int, default=10_000, help="samples per shard at most (default 10000)")
    g.add_argument("--val-fraction", type=float, default=0.0, help="share of samples (by id hash) for validation")
    g.add_argument("--overwrite", action="store_true", help="replace shards of the same prefix")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = parser.add_argument_group("validation")
    c.add_argument("--max-chars", type=int, default=Limits.max_chars, help="text characters per sample at most")
    c.add_argument("--max-images", type=int, default=Limits.max_images, help="images per sample at most")
    c.add_argument("--max-image-bytes", type=int, default=MAX_IMAGE_BYTES,
                   help=f"bytes per image file at most (default {MAX_IMAGE_BYTES})")
    c.add_argument("--no-system-turn", action="store_true",
                   help="reject conversations with a system turn (for Gemma-based models: that chat format has none)")
    c.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS, help="pixels per image at most")


def options_from(args: argparse.Namespace, prefix: str, output: Path | None = None) -> Options:
    return Options(
        output=output or args.output,
        prefix=prefix,
        workers=args.workers,
        maxcount=args.shard_count,
        maxsize=args.shard_size * 1e6,
        val_fraction=args.val_fraction,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(
        max_chars=args.max_chars,
        max_images=args.max_images,
        max_image_pixels=args.max_image_pixels,
        max_image_bytes=args.max_image_bytes,
        allows_system=not args.no_system_turn,
        add_missing_image_token=getattr(args, "add_missing_image_token", False),
    )


def print_summary(reports: list[dict[str, Any]]) -> None:
    for r in reports:
        print(f"{r['prefix']}: {r['entries']} entries, written {r['written']}, rejected {r['rejected_total']} "
              f"{r['rejected'] or ''}")
        print(f"  report: {Path(r['output']) / (r['prefix'] + '-report.json')}")
    print("sources:  # for a conf/data file")
    for r in reports:
        print(f"  {r['prefix']}:")
        for split, url in r["urls"].items():
            print(f"    {split}: {url}")
