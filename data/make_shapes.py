"""Build the built-in coloured-shapes dataset (WebDataset shards of images and short videos + an MMBench-layout
held-out TSV and a Video-MME-layout held-out video set).

`python train.py` runs this automatically when the shards are missing; run it by hand to build elsewhere:

    python data/make_shapes.py --out data/shards/shapes [--scale 0.1] [--with shapes_hard digits]
"""

import argparse
import logging

from ovis_lit.data.shapes import SCENE_SETS, ensure_shapes_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/shards/shapes", help="output directory")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sample counts")
    parser.add_argument("--no-videos", action="store_true", help="images only (what models without video input use)")
    parser.add_argument("--with", dest="extra", nargs="*", default=[], choices=SCENE_SETS,
                        help="the scene sets that need vision too (built otherwise when a stage first uses them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_shapes_dataset(args.out, scale=args.scale, videos=not args.no_videos, sources=args.extra))


if __name__ == "__main__":
    main()
