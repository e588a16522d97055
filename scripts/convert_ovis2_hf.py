"""Convert between transformers' Ovis2 layout (`Ovis2ForConditionalGeneration`, the -hf checkpoints) and the
original Ovis2 layout, which training (`model.pretrained=`) and evaluation (`evals/run.py checkpoint=`) read.

    python scripts/convert_ovis2_hf.py /ckpt/Ovis2-1B-hf /ckpt/Ovis2-1B-original            # -hf -> original
    python scripts/convert_ovis2_hf.py /ckpt/Ovis2-1B /ckpt/Ovis2-1B-hf --to-hf \
        --image-token-id 151665 --indicator-token-ids 151666 151667 151668 151669 151670      # original -> -hf

The weights are copied exactly. Either way the model computes what the original Ovis2 computes in ovis-lit (visual
features before AIMv2's final norm); transformers' own port applies that norm, so run in transformers the -hf
checkpoint gives slightly different visual tokens (see ovis_lit/interop/hf_ovis2.py). With --to-hf the image and
indicator ids must exist in the tokenizer that goes with the checkpoint.
"""

import argparse

from ovis_lit.interop.hf_ovis2 import export_hf_ovis2, load_hf_ovis2
from ovis_lit.interop.original import load_original
from ovis_lit.interop.original_export import export_original


def convert(source: str, out: str, to_hf: bool = False, multimodal_max_length: int = 32768,
            image_token_id: int | None = None, indicator_token_ids: list[int] | None = None) -> str:
    if to_hf:
        if image_token_id is None or not indicator_token_ids:
            raise ValueError("--to-hf needs --image-token-id and --indicator-token-ids")
        model, processor = load_original(source)
        return str(export_hf_ovis2(model, out, image_token_id, indicator_token_ids, processor))
    model, processor = load_hf_ovis2(source)
    if processor is None:
        raise FileNotFoundError(f"{source} has no tokenizer files, which the original layout needs")
    return str(export_original(model, processor, out, multimodal_max_length=multimodal_max_length))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--to-hf", action="store_true", help="original Ovis2 layout -> transformers' layout")
    parser.add_argument("--multimodal-max-length", type=int, default=32768, help="written to the original config")
    parser.add_argument("--image-token-id", type=int)
    parser.add_argument("--indicator-token-ids", type=int, nargs=5)
    args = parser.parse_args()
    print(convert(args.source, args.out, args.to_hf, args.multimodal_max_length, args.image_token_id,
                  args.indicator_token_ids))


if __name__ == "__main__":
    main()
