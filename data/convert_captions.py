"""Convert an image folder with captions (CSV / JSON Lines) to WebDataset shards.

    python data/convert_captions.py --help
"""

from ovis_lit.data.convert.captions import main

if __name__ == "__main__":
    main()
