"""Convert datasets in the original Ovis layout (dataset-info JSON) to WebDataset shards.

    python data/convert_ovis.py --help
"""

from ovis_lit.data.convert.ovis import main

if __name__ == "__main__":
    main()
