"""The original Ovis dataset layout -> one WebDataset shard set per dataset.

A dataset-info JSON names the datasets: {name: {"meta_file": ..., "image_dir": ..., "data_format": "caption" |
"conversation", "caption_template": "<image>\\nDescription:\\n"?}}. A caption meta_file is a parquet file (or a
JSON list / JSON Lines) of rows with `image_path` (or `image`: a path, bytes, or {"bytes": ...}) and `caption`
(and optionally a per-row `caption_template`); a conversation meta_file is LLaVA-style JSON. Relative paths are
taken from `--root` (default: the dataset-info file's directory).

    python data/convert_ovis.py --dataset-info ovis/train/dataset_info_v1_5.json --output shards/ \\
        [--datasets pixelprose-14m,wikipedia-348k]

Writes `<output>/<name>/<name>-train-NNNNNN.tar` (+ a report per dataset) and `<output>/report.json` with the
`sources:` entries for a conf/data file; the original concatenates its datasets, which `use: {name: samples}`
reproduces.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator

from .captions import CaptionConverter, check_template
from .checks import Limits
from .cli import limits_from, options_from, run_command
from .llava import ConversationConverter, load_entries
from .runner import Options, run
from .shards import safe_name
from .text import load_records
from .video import VideoOptions, add_video_arguments, video_options_from

CAPTION_FIELDS = ("image_path", "image", "caption", "caption_template", "id")


def read_dataset_info(path: str | Path) -> dict[str, dict[str, Any]]:
    try:
        info = json.loads(Path(path).read_bytes().decode("utf-8-sig"))  # a BOM (Windows editors) is dropped
    except UnicodeDecodeError as exn:
        raise ValueError(f"{path}: not UTF-8 text ({exn})") from None
    except json.JSONDecodeError as exn:
        raise ValueError(f"{path}:{exn.lineno}:{exn.colno}: not JSON: {exn.msg}") from None
    if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
        raise ValueError(f"{path}: expected {{name: {{meta_file, image_dir, data_format}}}}")
    for name, entry in info.items():
        missing = {"meta_file", "data_format"} - set(entry)
        if missing:
            raise ValueError(f"{path}: dataset {name!r} lacks {sorted(missing)}")
        if entry["data_format"] not in ("caption", "conversation"):
            raise ValueError(f"{path}: dataset {name!r} has data_format {entry['data_format']!r}")
    return info


def caption_rows(meta_file: Path) -> tuple[Iterator[dict], int]:
    """Rows of a caption meta file (parquet read in batches, so a 14M-row file is never in memory at once)."""
    return load_records(meta_file, CAPTION_FIELDS, batch_size=4096)


def _path(root: Path, value: str | None) -> Path:
    path = Path(value or ".")
    return path if path.is_absolute() else root / path


def convert(dataset_info: str | Path, output: str | Path, options: Options, limits: Limits | None = None,
            datasets: list[str] | None = None, root: str | Path | None = None,
            video: VideoOptions | None = None) -> dict[str, Any]:
    """Convert the named datasets (default: all). Returns {"datasets": {name: report}, "sources": ..., "use": ...}."""
    info = read_dataset_info(dataset_info)
    root = Path(root) if root else Path(dataset_info).resolve().parent
    names = datasets or list(info)
    unknown = set(names) - set(info)
    if unknown:
        raise ValueError(f"{sorted(unknown)} not in {dataset_info} (it has {sorted(info)})")
    for name in names:
        check_template(info[name].get("caption_template"))
    limits = limits or Limits()
    reports: dict[str, Any] = {}
    for name in names:
        entry = info[name]
        prefix = safe_name(name)
        meta_file, image_dir = _path(root, entry["meta_file"]), _path(root, entry.get("image_dir"))
        opts = Options(**{**options.__dict__, "output": Path(output) / prefix, "prefix": prefix})
        meta = {"format": f"ovis-{entry['data_format']}", "dataset": name, "inputs": [str(meta_file)],
                "image_root": str(image_dir)}
        if entry["data_format"] == "caption":
            rows, total = caption_rows(meta_file)
            converter = CaptionConverter(image_dir, limits, template=entry.get("caption_template"))
            reports[name] = run(converter, rows, opts, total=total, info=meta)
        else:
            entries = load_entries(meta_file)
            converter = ConversationConverter(image_dir, limits, video or VideoOptions())
            reports[name] = run(converter, entries, opts, total=len(entries), info=meta)
    summary = {
        "dataset_info": str(dataset_info),
        "datasets": {n: {k: r[k] for k in ("entries", "written", "rejected", "urls")} for n, r in reports.items()},
        "sources": {r["prefix"]: r["urls"] for r in reports.values() if r["urls"]},
        # the original concatenates its datasets: sampling by size is the same mixture
        "use": {r["prefix"]: r["written"]["train"] for r in reports.values() if r["written"]["train"]},
    }
    Path(output).mkdir(parents=True, exist_ok=True)
    (Path(output) / "report.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    summary["reports"] = reports
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-info", required=True, help="the dataset-info JSON")
    parser.add_argument("--datasets", help="comma- or |-separated names to convert (default: all)")
    parser.add_argument("--root", help="what relative meta_file / image_dir paths start from")
    parser.add_argument("--add-missing-image-token", action="store_true",
                        help="conversations with images but no <image> mark get one per image first")
    add_video_arguments(parser)

    def convert_args(args: argparse.Namespace) -> dict:
        names = [n.strip() for n in args.datasets.replace("|", ",").split(",") if n.strip()] if args.datasets else None
        return convert(args.dataset_info, args.output, options_from(args, "unused"), limits_from(args), names,
                       args.root, video_options_from(args))

    args, summary = run_command(parser, argv, convert_args, lambda summary: list(summary["reports"].values()))
    print(f"summary: {Path(args.output) / 'report.json'}")
    return summary
