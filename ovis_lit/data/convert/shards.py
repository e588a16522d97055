"""Writing converted samples as WebDataset shards: records, the train/val split, size- and count-bounded shards.

A record is `<key>.json` ({"id", "conversations", "images"} or {"id", "caption", "caption_template"?}) plus one
member per image, `<key>.<i>.<ext>` (the original file's bytes, never re-encoded), named in order by the JSON's
"images": the layout `ovis_lit.data.samples` reads.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

from ...rejection import Rejected
from .checks import Converted


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
        raise Rejected("bad_encoding", f"not valid Unicode text: {exn}") from exn


def to_record(key: str, converted: Converted) -> dict[str, Any]:
    record: dict[str, Any] = {"__key__": key}
    record["json"] = converted.json_bytes or encode_meta(converted.meta)
    for suffix, data in converted.images:
        record[suffix] = data
    return record


def is_val(sample_id: str, fraction: float) -> bool:
    """A stable split: by a hash of the sample's id, so re-running (or adding data) keeps samples on their side."""
    return fraction > 0 and zlib.crc32(sample_id.encode("utf-8")) / 2**32 < fraction
