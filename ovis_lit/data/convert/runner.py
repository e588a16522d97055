"""One conversion run: entries through a converter function, valid samples into shards, the rest into the report.

Entries that would be skipped in training are rejected here instead, under the reason training counts them as
(`checks`), each listed in `<prefix>-rejected.jsonl` and counted in `<prefix>-report.json`.
A conversion that stops (an exception, Ctrl-C, SIGTERM) leaves no `.tmp` shard behind.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from ...rejection import Rejected
from .shards import SplitWriter, is_val, safe_name, to_record
from .workers import ConvertFn, pool_map, sigterm_as_interrupt, worker_pool

log = logging.getLogger(__name__)

EXAMPLES_PER_REASON = 20


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


def run_inputs(fn: ConvertFn, fmt: str, inputs: list, loaded: list[tuple[Iterable[Any], int]], image_root,
               options: Options) -> dict[str, Any]:
    """`run` over the records of several input files, in order: `loaded` holds (records, their number) per file of
    `inputs`; the report names the format, the inputs and the image root."""
    info = {"format": fmt, "inputs": [str(f) for f in inputs], "image_root": str(image_root)}
    entries = itertools.chain.from_iterable(rows for rows, _ in loaded)
    return run(fn, entries, options, total=sum(n for _, n in loaded), info=info)


def run(
    fn: ConvertFn,
    entries: Iterable[Any],
    options: Options,
    total: int | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert `entries` with `fn(index, entry) -> Converted` (raising Rejected), write the shards and the report.
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
            for index, sample_id, result in pool_map(fn, entries, pool, options.workers, options.chunk):
                n += 1
                bar.update()
                if isinstance(result, Rejected):
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
