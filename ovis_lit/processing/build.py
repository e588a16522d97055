"""What the `processor` config group instantiates: the processor that goes with a model.

Each option is a `_partial_` call of one of these two builders; `training.run.build_stage` hands it the model
(a ModelSource), because the model decides where the tokenizer comes from (a pretrained directory) and how many
visual tokens a crop becomes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..model.source import ModelSource
from .image import ImagePreprocessor
from .native_processor import NativeOvisProcessor
from .native_resolution import NativeResolutionPreprocessor
from .processor import OvisProcessor
from .tokenizer import load_tokenizer


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _tokenizer(model: ModelSource, tokenizer: Any):
    """The config's tokenizer, else the one in the LLM's directory (a model built from parts)."""
    if tokenizer is not None:
        return tokenizer
    directory = (model.spec.get("llm") or {}).get("pretrained")
    if not directory:
        raise ValueError(f"model {model.name}: no tokenizer: set model.pretrained (an Ovis directory), "
                         "model.spec.llm.pretrained (an LLM directory) or processor.tokenizer")
    return load_tokenizer(directory)


def crop_processor(
    model: ModelSource,
    chat_format: str,
    image: dict[str, Any],
    tokenizer: Any = None,
    max_partition: int = 9,
    multi_image_max_partition: int = 1,
    multimodal_max_length: int = 8192,
    tokens_per_crop: int | None = None,
) -> OvisProcessor:
    """Ovis 1.6/2: images cut into crops. A pretrained model's directory supplies the tokenizer and the image
    normalisation; otherwise `tokenizer` (or the LLM directory's) and `image` (ImagePreprocessor arguments).
    `multimodal_max_length`: what exports write to config.json (the original's preprocessing truncates there).
    `tokens_per_crop`: the model's, when the caller knows it (else from the model)."""
    per_crop = tokens_per_crop or model.tokens_per_crop()
    options = {"max_partition": max_partition, "multi_image_max_partition": multi_image_max_partition,
                  "multimodal_max_length": multimodal_max_length}
    if model.pretrained:
        return OvisProcessor.from_pretrained(model.pretrained, chat_format, per_crop, **options)
    return OvisProcessor(_tokenizer(model, tokenizer), chat_format, ImagePreprocessor(**_plain(image)), per_crop,
                         **options)


def native_processor(
    model: ModelSource, chat_format: str, image: dict[str, Any], tokenizer: Any = None,
    pixel_budgets: dict[str, int] | None = None,
) -> NativeOvisProcessor:
    """Ovis2.5: native-resolution images. A pretrained directory supplies the tokenizer and normalisation (with
    the config's min/max pixels); otherwise `tokenizer` and `image` (NativeResolutionPreprocessor arguments).
    `pixel_budgets`: the training ranges of samples with several images or a video (`pixel_budgets.PixelBudgets`)."""
    image = dict(_plain(image))
    budgets = _plain(pixel_budgets)
    if model.pretrained:
        from ..interop.local_files import read_json_file

        vit_config = read_json_file(Path(model.pretrained) / "config.json")["vit_config"]
        limits = {k: image[k] for k in ("min_pixels", "max_pixels") if k in image}
        return NativeOvisProcessor.from_pretrained(model.pretrained, chat_format, vit_config, budgets, **limits)
    image["image_mean"], image["image_std"] = tuple(image["image_mean"]), tuple(image["image_std"])
    return NativeOvisProcessor(_tokenizer(model, tokenizer), chat_format, NativeResolutionPreprocessor(**image),
                               budgets)
