"""Convert preference data (chosen / rejected answers; RLAIF-V or LLaVA style) to WebDataset shards for stage=dpo.

    python data/convert_preference.py --help
"""

from ovis_lit.data.convert.preference import main

if __name__ == "__main__":
    main()
