"""Convert LLaVA-style conversation JSON + an image folder to WebDataset shards.

    python data/convert_llava.py --help
"""

from ovis_lit.data.convert.llava import main

if __name__ == "__main__":
    main()
