"""Reading WebDataset tar shards record by record, never raising for a broken shard.

webdataset's own tar reader cannot tell a truncated shard from a complete one and stops at a broken header; this one
reads the headers itself (see _ScanningTarInfo) so that every loss is counted under a reason (`read_shards`).
Records come out undecoded ({"__key__", "__url__", suffix: bytes}): nothing here decodes a member.
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections import Counter
from typing import Iterator

from .skips import note_skip

log = logging.getLogger(__name__)

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
        note_skip(counter, seen, "bad_shard", f"{url}: {type(exn).__name__}: {exn}")
        return
    current: dict | None = None
    bad_record = None  # the reason the current record is dropped

    def finish(record: dict | None, reason: str | None) -> Iterator[dict]:
        if record is not None:
            if reason:
                note_skip(counter, seen, reason, f"{url}: {record['__key__']}")
            else:
                yield record

    try:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|*", tarinfo=_ScanningTarInfo, ignore_zeros=True)
        except Exception as exn:
            note_skip(counter, seen, "bad_shard", f"{url}: {type(exn).__name__}: {exn}")
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
                        note_skip(counter, seen, "bad_tar_header", f"{url}: {gap[0]} (its header is broken)")
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
                    note_skip(counter, seen, "duplicate_member", f"{url}: {name} (kept the first)")
                    continue
                current[suffix] = tar.extractfile(info).read()
        except Exception as exn:  # cut inside a member's data, a bad gzip stream, ...
            log.debug("%s: %s", url, exn)
            failed = True
        end, lost_name = ("cut", None) if failed else scan.tail()
        if scan.headers == 0 and end != "clean":
            note_skip(counter, seen, "bad_shard", f"{url}: no valid tar header")  # not a tar (or empty)
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
                note_skip(counter, seen, "bad_tar_header", f"{url}: unreadable from a broken header to its end")
        else:  # the record being read when the shard ended may be incomplete: dropped with the rest
            last = current["__key__"] if current else None
            note_skip(counter, seen, "truncated_shard", f"{url}: ends early (dropped the record it ended in: {last})")
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

