"""Converters from common multimodal dataset layouts to the WebDataset shards `OvisDataModule` streams.

- `llava`: LLaVA-style conversation JSON + an image folder (`data/convert_llava.py`);
- `ovis`: the original Ovis layout, a dataset-info JSON naming caption parquet/JSON and conversation JSON files
  (`data/convert_ovis.py`);
- `captions`: an image folder with captions in CSV / JSON Lines (`data/convert_captions.py`);
- `preference`: chosen / rejected answer pairs, RLAIF-V or LLaVA style, for stage=dpo (`data/convert_preference.py`).

Each validates while it converts, shards by size and count, runs on several processes and reports rejected
entries by reason (`checks` says what is refused, `runner` writes the shards and the report, `cli` is the
command line they share).
"""
