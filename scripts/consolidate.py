"""Turn a sharded checkpoint of `trainer=fsdp` into one export in the original Ovis layout.

    python scripts/consolidate.py outputs/runs/<time>/checkpoints/last.ckpt --processor outputs/runs/<time>/export \
        --out outputs/runs/<time>/consolidated

`--processor`: a directory with the tokenizer, image-processor and config files (the run's `export/`, or the Ovis
checkpoint the run started from); `--chat-format`: the model's chat format (gemma, qwen, llama3).
"""

import argparse

from ovis_lit.interop.consolidate import export_sharded_checkpoint
from ovis_lit.interop.original import original_tokens_per_crop, read_original_config
from ovis_lit.processing.processor import OvisProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="the sharded checkpoint directory (e.g. checkpoints/last.ckpt)")
    parser.add_argument("--processor", required=True, help="directory with tokenizer, preprocessor_config.json and config.json")
    parser.add_argument("--chat-format", default="gemma")
    parser.add_argument("--out", required=True, help="output directory (original Ovis layout)")
    args = parser.parse_args()
    tokens_per_crop = original_tokens_per_crop(read_original_config(args.processor))
    processor = OvisProcessor.from_pretrained(args.processor, args.chat_format, tokens_per_crop)
    print(export_sharded_checkpoint(args.checkpoint, processor, args.out))


if __name__ == "__main__":
    main()
