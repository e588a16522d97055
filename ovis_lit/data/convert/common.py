"""What every converter shares: validation, sample records, size-bounded shard writing, parallel work, the report.

A converter turns input entries into WebDataset records in the layout `ovis_lit.data.samples` reads:
`<key>.json` ({"id", "conversations", "images"} or {"id", "caption", "caption_template"?}) plus one member per
image, `<key>.<i>.<ext>` (the original file's bytes, never re-encoded), named in order by the JSON's "images".
Entries that would be skipped in training are rejected here instead, each counted by reason, listed in
`<prefix>-rejected.jsonl` and summed in `<prefix>-report.json`.
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
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ...constants import IMAGE_TOKEN
from ...processing.image import MAX_IMAGE_PIXELS, ImageRejected, open_image
from ..samples import check_conversation
from ..stream import SkipSample

log = logging.getLogger(__name__)

# PIL format -> the member extension the training reader recognises (samples.IMAGE_EXTENSIONS)
FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                     "TIFF": "tiff"}
EXAMPLES_PER_REASON = 20


class Reject(Exception):
    """An input entry that is not converted; `reason` is what the report counts it as."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Limits:
    """What a converted sample must satisfy (besides decoding)."""

    max_chars: int = 200_000  # characters of text (conversation or caption); longer entries are rejected
    max_images: int = 32  # images per sample
    max_image_pixels: int | None = MAX_IMAGE_PIXELS  # per image (a decompression-bomb guard)
    add_missing_image_token: bool = False  # LLaVA data that leaves `<image>` out: put one per image first


@dataclass
class Converted:
    """A validated sample: its JSON and its image members, ready to be written."""

    index: int
    meta: dict[str, Any]
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (member suffix, bytes), in order


# ---------------------------------------------------------------------------------------------------- checks
def entry_id(entry: Any, index: int) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("id"), (str, int)):
        return str(entry["id"])
    return str(index)


def image_member(data: bytes, position: int, limits: Limits, what: str) -> tuple[str, bytes]:
    """Validate image bytes (they must decode completely, within the pixel limit, and convert to RGB) and name
    their member by the format PIL found. Other formats are stored re-encoded as PNG."""
    try:
        image = open_image(data, limits.max_image_pixels)
    except ImageRejected as exn:
        raise Reject(exn.reason, f"{what}: {exn}") from exn
    from PIL import Image

    fmt = Image.open(io.BytesIO(data)).format  # header only
    ext = FORMAT_EXTENSIONS.get(fmt or "")
    if ext is None:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data, ext = buf.getvalue(), "png"
    return f"{position}.{ext}", data


def resolve_image(root: Path, name: Any) -> Path:
    """An image path from the data, inside `root` (absolute paths and `..` escapes are refused)."""
    if not isinstance(name, str) or not name.strip():
        raise Reject("bad_json", f"image path {name!r} is not a string")
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        raise Reject("bad_image_path", f"{name!r} is outside the image root")
    return root / path


def read_image_file(root: Path, name: Any) -> tuple[bytes, str]:
    path = resolve_image(root, name)
    try:
        return path.read_bytes(), str(name)
    except FileNotFoundError as exn:
        raise Reject("missing_image", str(name)) from exn
    except (IsADirectoryError, PermissionError, OSError) as exn:
        raise Reject("missing_image", f"{name}: {type(exn).__name__}: {exn}") from exn


def check_turns(conversations: Any, n_images: int, limits: Limits, key: str) -> list[dict]:
    """The checks training would do on the text, plus the converter's limits. Returns the turns to store."""
    try:
        check_conversation(conversations, key)  # bad_json, empty_conversation, no_assistant_turn
    except SkipSample as exn:
        raise Reject(exn.reason, key) from exn
    turns = [dict(t) for t in conversations]
    if not any(t["value"].strip() for t in turns if t.get("from", t.get("role")) in ("gpt", "assistant")):
        raise Reject("empty_answer", key)
    marks = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    first_user = next((t for t in turns if t.get("from", t.get("role")) in ("human", "user")), None)
    if marks == 0 and n_images and limits.add_missing_image_token and first_user is not None:
        first_user["value"] = f"{IMAGE_TOKEN}\n" * n_images + first_user["value"]
        marks = n_images
    if marks != n_images:
        raise Reject("image_count_mismatch", f"{key}: {marks} {IMAGE_TOKEN} marks, {n_images} images")
    chars = sum(len(t["value"]) for t in turns)
    if chars > limits.max_chars:
        raise Reject("too_long", f"{key}: {chars} characters > {limits.max_chars}")
    return turns


def check_caption(caption: Any, template: Any, limits: Limits, key: str) -> tuple[str, str | None]:
    if caption is None or isinstance(caption, (bool, dict, list)):
        raise Reject("bad_json", f"{key}: caption {caption!r}")
    caption = str(caption)
    if not caption.replace(IMAGE_TOKEN, "").strip():
        raise Reject("empty_caption", key)
    if len(caption) > limits.max_chars:
        raise Reject("too_long", f"{key}: {len(caption)} characters > {limits.max_chars}")
    if template is not None:
        if not isinstance(template, str) or template.count(IMAGE_TOKEN) != 1:
            raise Reject("bad_caption_template", f"{key}: {template!r} needs exactly one {IMAGE_TOKEN}")
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

    def url(self) -> str | None:
        """The brace pattern naming every shard (what conf/data `sources` take)."""
        if not self.shards:
            return None
        last = len(self.shards) - 1
        base = str(self.output / f"{self.prefix}-{self.split}-")
        return f"{base}000000.tar" if last == 0 else f"{base}{{000000..{last:06d}}}.tar"


def to_record(key: str, converted: Converted) -> dict[str, Any]:
    record: dict[str, Any] = {"__key__": key}
    record["json"] = json.dumps(converted.meta, ensure_ascii=False).encode("utf-8")
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
        return index, None, fn(index, entry)
    except Reject as exn:
        return index, entry_id(entry, index), exn
    except Exception as exn:  # a converter bug or an input nobody foresaw: reported, not fatal
        return index, entry_id(entry, index), Reject(f"error_{type(exn).__name__}", str(exn))


def _pool_map(fn: Callable[[int, Any], Converted], entries: Iterable[Any], workers: int, chunk: int) -> Iterator:
    """(index, id, Converted | Reject) in input order, from `workers` processes (in-process for 1)."""
    jobs = ((fn, i, e) for i, e in enumerate(entries))
    if workers <= 1:
        yield from map(_call, jobs)
        return
    with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
        while True:
            block = list(itertools.islice(jobs, chunk * workers))
            if not block:
                break
            yield from pool.imap(_call, block, chunksize=max(1, min(64, len(block) // (4 * workers))))


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
    started = time.perf_counter()
    n = 0
    rejected_path = output / f"{prefix}-rejected.jsonl"
    with open(rejected_path, "w", encoding="utf-8") as rejects, tqdm(
        total=total, disable=not options.progress, desc=f"converting {prefix}", unit="sample", dynamic_ncols=True
    ) as bar:
        for index, sample_id, result in _pool_map(fn, entries, options.workers, options.chunk):
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
            split = "val" if is_val(str(result.meta.get("id", index)), options.val_fraction) else "train"
            writers[split].write(to_record(f"{prefix}-{index:09d}", result))
    for writer in writers.values():
        writer.close()
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
