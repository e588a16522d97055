"""The command line every converter shares: output and validation options, running, errors, the summary."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from ...processing.image_decoding import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from .checks import Limits
from .runner import Options


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


def files_parser(doc: str | None, flag: str, inputs_help: str, missing_mark_help: str) -> argparse.ArgumentParser:
    """The parser of a converter of conversation files: `flag` (one or more input files), --image-root, --name (the
    shard-set name; default: the first input's stem) and --add-missing-image-token (`run_command` adds the rest)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(flag, nargs="+", required=True, help=inputs_help)
    parser.add_argument("--image-root", default=".", help="directory the image paths are relative to")
    parser.add_argument("--name", help="shard-set name (file prefix); default: the first input file's stem")
    parser.add_argument("--add-missing-image-token", action="store_true", help=missing_mark_help)
    return parser


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


def run_command(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    convert: Callable[[argparse.Namespace], Any],
    reports_of: Callable[[Any], list[dict[str, Any]]] = lambda report: [report],
) -> tuple[argparse.Namespace, Any]:
    """A converter's `main`: add the shared options to its parser, parse, run `convert(args)`, print the summary of
    its reports, return (args, what `convert` returned). An unreadable input, or shards already there, ends with
    a message and exit status 2, no traceback."""
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = convert(args)
    except (ValueError, OSError) as exn:
        parser.exit(2, f"error: {exn}\n")
    print_summary(reports_of(result))
    return args, result


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
