"""Reading torch.distributed.checkpoint (DCP) directories without running code from them.

DCP's own reader unpickles the directory's `.metadata` file with the full `pickle` module, and its default load
planner reads every non-tensor entry with an unrestricted torch.load: a crafted checkpoint folder runs code when
loaded. Here:

- `.metadata` is unpickled by `_MetadataUnpickler`, which resolves only the handful of DCP metadata classes (and
  torch.Size, dtypes, layouts) listed in `ALLOWED_GLOBALS`; any other global (os.system, builtins.eval, ...) is
  refused before anything is called. torch's own weights-only unpickler cannot be used: it does not read pickle
  protocol 4 frames, which DCP writes. This is the only place in ovis-lit that unpickles (tests/test_bad_data.py
  checks that), and what it builds is then checked field by field (`_check_metadata`): every storage entry must
  name a plain file inside the checkpoint directory, and byte ranges must lie within it.
- non-tensor entries (optimiser hyper-parameters, ...) are read with `torch.load(weights_only=True)`
  (`SafeLoadPlanner`); tensors already are.

`read_dcp_metadata` is the checked metadata, `dcp_load` the equivalent of `torch.distributed.checkpoint.load` for a
local directory. Everything refused is a ValueError that names the file.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo
from torch.distributed.checkpoint.planner import ReadItem

METADATA_FILE = ".metadata"  # DCP's name for its index of the shards
MAX_METADATA_BYTES = 512 * 1024**2  # a 100 B-parameter run's index is tens of MB; more is not a DCP index


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object: everything a DCP `.metadata` pickle may refer to."""
    classes = [
        dcp_metadata.Metadata,
        dcp_metadata.MetadataIndex,
        dcp_metadata.TensorStorageMetadata,
        dcp_metadata.BytesStorageMetadata,
        dcp_metadata.ChunkStorageMetadata,
        dcp_metadata.TensorProperties,
        dcp_metadata._MEM_FORMAT_ENCODING,  # TensorProperties pickles its memory format as this enum
        dcp_metadata.StorageMeta,
        _StorageInfo,
        torch.Size,
        pathlib.PosixPath,  # StorageMeta.checkpoint_id: the directory the checkpoint was written to
        pathlib.WindowsPath,
    ]
    allowed: dict[tuple[str, str], Any] = {(c.__module__, c.__qualname__): c for c in classes}
    for value in vars(torch).values():  # torch.float32, torch.strided, ...: plain values, not callables
        if isinstance(value, (torch.dtype, torch.layout)):
            allowed[("torch", str(value).removeprefix("torch."))] = value
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout  # name -> torch.layout
    return allowed


ALLOWED_GLOBALS = _allowed_globals()


class _MetadataUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable callables are the allow-listed metadata classes.

    Every object a pickle can call (REDUCE, NEWOBJ, INST, OBJ, extension codes) is first looked up through
    `find_class`, and persistent ids are refused by the base class; so refusing every other name here means no
    other code runs while the file is read.
    """

    def __init__(self, file: io.BufferedIOBase, source: Path):
        super().__init__(file)
        self.source = source
        self.refused: str | None = None  # why find_class stopped the load, if it did

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            self.refused = (
                f"{self.source}: refused: it refers to {module}.{name}, which is not part of a "
                "torch.distributed.checkpoint index (a crafted pickle?); nothing from it was run"
            )
            raise pickle.UnpicklingError(self.refused) from None


def read_dcp_metadata(directory: str | Path) -> dcp_metadata.Metadata:
    """The checked index (`.metadata`) of a DCP checkpoint directory."""
    directory = Path(directory)
    path = directory / METADATA_FILE
    if not path.is_file() or path.is_symlink():
        raise ValueError(f"{path}: not a regular file: {directory} is not a readable sharded checkpoint")
    size = path.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"{path}: {size} bytes, over the {MAX_METADATA_BYTES} a checkpoint index may have")
    with path.open("rb") as f:
        unpickler = _MetadataUnpickler(f, path)
        try:
            metadata = unpickler.load()
        except Exception as e:  # a refused name; or truncated, not a pickle, a class called with nonsense, ...
            if unpickler.refused:
                raise ValueError(unpickler.refused) from None
            raise ValueError(f"{path}: not a readable checkpoint index ({type(e).__name__}: {e})") from None
    _check_metadata(metadata, directory, path)
    return metadata


def _check_metadata(metadata: Any, directory: Path, path: Path) -> None:
    """What DCP later relies on: the right types, and storage entries inside the directory's own files."""

    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: refused: {what}")

    if type(metadata) is not dcp_metadata.Metadata:
        raise bad(f"holds a {type(metadata).__name__}, not a checkpoint index")
    entries = metadata.state_dict_metadata
    if not isinstance(entries, dict) or not all(isinstance(k, str) for k in entries):
        raise bad("state_dict_metadata is not a mapping of names")
    storage_types = (dcp_metadata.TensorStorageMetadata, dcp_metadata.BytesStorageMetadata)
    for name, entry in entries.items():
        if type(entry) not in storage_types:
            raise bad(f"entry {name!r} is a {type(entry).__name__}")
        if isinstance(entry, dcp_metadata.TensorStorageMetadata):
            if type(entry.size) is not torch.Size or type(entry.properties) is not dcp_metadata.TensorProperties:
                raise bad(f"entry {name!r} has no valid tensor size and properties")
            if not isinstance(entry.chunks, list) or not all(
                type(c) is dcp_metadata.ChunkStorageMetadata
                and type(c.offsets) is torch.Size
                and type(c.sizes) is torch.Size
                for c in entry.chunks
            ):
                raise bad(f"entry {name!r} has malformed chunks")
    storage = metadata.storage_data
    if not isinstance(storage, dict):
        raise bad("storage_data is not a mapping")
    root = directory.resolve()
    file_sizes: dict[str, int] = {}
    for index, info in storage.items():
        if type(index) is not dcp_metadata.MetadataIndex or type(info) is not _StorageInfo:
            raise bad("storage_data holds something other than storage entries")
        rel = info.relative_path
        if not isinstance(rel, str) or not rel or rel in (".", "..") or "/" in rel or "\\" in rel or "\0" in rel:
            raise bad(f"entry {index.fqn!r} points at {rel!r}: shard files must lie in the checkpoint directory")
        if rel not in file_sizes:
            shard = directory / rel
            if not shard.is_file() or shard.resolve().parent != root:
                raise bad(f"entry {index.fqn!r}: its shard file {shard} is missing, not a regular file or outside "
                          f"{directory}")
            file_sizes[rel] = shard.stat().st_size
        if not (isinstance(info.offset, int) and isinstance(info.length, int)) or info.offset < 0 or info.length < 0:
            raise bad(f"entry {index.fqn!r} has an invalid byte range")
        if info.offset + info.length > file_sizes[rel]:
            raise bad(f"entry {index.fqn!r} reads past the end of {directory / rel} (truncated shard?)")
        if info.transform_descriptors:  # compression etc.: never written by ovis-lit
            raise bad(f"entry {index.fqn!r} needs stream transforms {list(info.transform_descriptors)!r}")


class SafeFileSystemReader(FileSystemReader):
    """DCP's file-system reader with the checked, allow-listed metadata reader."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        if kwargs.get("rank") is not None:  # per-rank index files: never written by Lightning or ovis-lit
            raise ValueError(f"{self.path}: per-rank checkpoint indexes are not supported")
        metadata = read_dcp_metadata(Path(self.path))
        if metadata.storage_meta is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner, but non-tensor entries are read as weights only (plain containers and numbers)."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def dcp_load(state: dict[str, Any], directory: str | Path) -> None:
    """`torch.distributed.checkpoint.load(state, ...)` from a local directory, in place, with no code run from it.
    Works with or without a process group (every rank calls it under one)."""
    directory = Path(directory)
    read_dcp_metadata(directory)  # a clear error before DCP wraps it
    no_dist = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    try:
        with warnings.catch_warnings():  # "torch.distributed is disabled ... assuming a single process": intended
            warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
            dcp.load(state, storage_reader=SafeFileSystemReader(directory), planner=SafeLoadPlanner(), no_dist=no_dist)
    except CheckpointException as e:  # a BaseException: one per failing rank
        causes = "; ".join(f"{type(exc).__name__}: {exc}" for exc, _ in e.failures.values())
        raise ValueError(f"{directory}: the sharded checkpoint does not load: {causes}") from None
    except (RuntimeError, ValueError, KeyError, AssertionError, pickle.UnpicklingError) as e:
        raise ValueError(f"{directory}: the sharded checkpoint does not load: {type(e).__name__}: {e}") from e


def read_torch_file(path: str | Path, **kwargs: Any) -> Any:
    """`torch.load(weights_only=True)` whose refusals name the file (a crafted pickle, a truncated file, ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (or not a regular file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except Exception as e:
        raise ValueError(
            f"{path}: refused: not loadable as weights only (tensors and plain containers) "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); nothing from it was run"
        ) from None


__all__ = ["ALLOWED_GLOBALS", "METADATA_FILE", "SafeFileSystemReader", "SafeLoadPlanner", "dcp_load",
           "read_dcp_metadata", "read_torch_file"]
