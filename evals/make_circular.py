"""Write the circular version of an MMBench-layout TSV (every question once per rotation of its options, in the
layout of VLMEvalKit's circular files): `python evals/make_circular.py mc-test.tsv mc-test-circular.tsv`.
Useful to score a custom multiple-choice set (e.g. the shapes held-out set) the way MMBench is scored."""

import argparse
import csv
from pathlib import Path

from ovis_lit.evaluation.benchmarks.mmbench import circular_copies
from ovis_lit.evaluation.tsv import read_benchmark_tsv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    rows = read_benchmark_tsv(args.source, ["index", "answer", "A", "B"])
    columns = list(rows[0]) if rows else []
    out = circular_copies(rows)
    with open(args.target, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[row.get(c, "") for c in columns] for row in out])
    print(f"{len(rows)} questions -> {len(out)} rows in {args.target}")


if __name__ == "__main__":
    main()
