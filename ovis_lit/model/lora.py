"""LoRA and QLoRA adapters on an OvisModel, through peft.

`model.lora` (default null: off) names the parts that get adapters; every `nn.Linear` inside a transformer block
of such a part (the ViT's encoder layers, the LLM's decoder layers) gets one:
the attention and MLP projections, whatever the generation calls them (Qwen2/Qwen3/Gemma2/Llama q/k/v/o_proj and
gate/up/down_proj; SigLIP/SigLIP2/SigLIP2-NaViT q/k/v/out_proj and fc1/fc2; AIMv2 q/k/v/out_proj and
gate/up/down_proj).
`modules` keeps only the projections with those leaf names (e.g. [q_proj, v_proj]).

Adapters are injected in place (`peft.inject_adapter_in_model`), so the model stays an OvisModel and keeps its
module names: a wrapped projection's weight becomes `<name>.base_layer.weight`, its adapters `<name>.lora_A.default
.weight` / `lora_B`. What trains is the stage's choice (training/freezing.py) minus the base weights of the targeted
parts: the head and visual table train fully next to the adapters when the stage trains them.

QLoRA (`quantize: nf4`) stores the targeted projections' frozen weights in 4-bit through bitsandbytes; it needs a
CUDA GPU and the bitsandbytes package, and refuses before anything is loaded otherwise.

Saved adapters use peft's layout (adapter_config.json + adapter_model.safetensors with `base_model.model.` keys,
what `PeftModel.from_pretrained` reads); loading reads safetensors only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

ADAPTER_NAME = "default"  # peft's adapter name inside the model (stripped from saved keys)
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_WEIGHTS_FILE = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the model's own names in saved adapters
QUANT_TYPES = ("nf4", "fp4")
BITSANDBYTES_HINT = ("QLoRA keeps the frozen base in 4-bit through bitsandbytes, which needs a CUDA GPU and the "
                     "package: pip install bitsandbytes (on a machine with CUDA), then train with trainer=gpu. "
                     "Without a GPU use LoRA (model.lora.quantize=null).")


@dataclass
class LoraSettings:
    """`model.lora`: rank, scaling (alpha / r), dropout on the adapters' input, the parts that get adapters and,
    optionally, the projection names to keep; `quantize`: null (LoRA) or nf4 / fp4 (QLoRA)."""

    r: int = 16
    alpha: float = 32
    dropout: float = 0.05
    target: list[str] = field(default_factory=lambda: ["llm", "visual_tokenizer.backbone"])
    modules: list[str] | None = None
    quantize: str | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> "LoraSettings | None":
        """None (LoRA off) for a null / empty config."""
        if not config:
            return None
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"model.lora has unknown keys {sorted(unknown)}; known: {list(cls.__dataclass_fields__)}")
        settings = cls(**config)
        settings.target = [settings.target] if isinstance(settings.target, str) else list(settings.target)
        if settings.r < 1 or not settings.target:
            raise ValueError(f"model.lora needs r >= 1 and at least one target part, got {config}")
        if settings.quantize is not None and settings.quantize not in QUANT_TYPES:
            raise ValueError(f"model.lora.quantize must be null (LoRA) or one of {QUANT_TYPES} (QLoRA), "
                             f"got {settings.quantize!r}")
        return settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_quantization(settings: LoraSettings | None) -> None:
    """QLoRA without a CUDA GPU or without bitsandbytes: a clear refusal, before any weight is read."""
    if settings is None or settings.quantize is None:
        return
    if not torch.cuda.is_available():
        raise RuntimeError(f"model.lora.quantize={settings.quantize}: no CUDA GPU here. " + BITSANDBYTES_HINT)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RuntimeError(f"model.lora.quantize={settings.quantize}: bitsandbytes is not installed. "
                           + BITSANDBYTES_HINT) from None


# ------------------------------------------------------------------------------------------------ which modules
def _blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of the ViT (its encoder layers) and of the LLM (its decoder layers)."""
    from .vision import encoder_layers

    return [*encoder_layers(model.visual_tokenizer.backbone), *model.llm.get_decoder().layers]


def target_module_names(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Full names of the projections that get adapters: every nn.Linear inside a transformer block of each target
    part (filtered by `settings.modules`)."""
    from ..training.freezing import matches, resolve_pattern

    # the projections of every block, so that a target deeper than a block (one attention) or above it (the LLM)
    # both resolve to the projections inside blocks
    in_block = {id(m) for block in _blocks(model) for m in block.modules() if isinstance(m, nn.Linear)}
    names: list[str] = []
    for pattern in settings.target:
        prefix = resolve_pattern(model, pattern)
        found = [name for name, module in model.named_modules()
                 if id(module) in in_block and matches(name, prefix)
                 and (settings.modules is None or name.rsplit(".", 1)[-1] in settings.modules)]
        if not found:
            raise ValueError(f"model.lora.target {pattern!r} holds no projection of a transformer block"
                             + (f" named {settings.modules}" if settings.modules else "")
                             + ": LoRA adapts the ViT's and LLM's layers; train the head or the visual table fully "
                               "through the stage's `trainable`")
        names += [n for n in found if n not in names]
    return names


def lora_config(model: nn.Module, settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                      target_modules=target_module_names(model, settings))


# --------------------------------------------------------------------------------------------------- in the model
def add_adapters(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Inject peft LoRA adapters (QLoRA: after quantizing the targeted projections), in place."""
    from peft.functional import cast_adapter_dtype, inject_adapter_in_model

    check_quantization(settings)
    config = lora_config(model, settings)
    if settings.quantize:
        quantize_linear_layers(model, list(config.target_modules), settings.quantize)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    # adapters of a bf16 / fp16 base train in float32 (as get_peft_model makes them): their small updates would
    # round away in 16 bits; peft casts their input and output around them
    cast_adapter_dtype(model, ADAPTER_NAME, autocast_adapter_dtype=True)
    model.lora_settings = settings  # what export and adapter saving read
    model.lora_config = config
    return model


def quantize_linear_layers(model: nn.Module, names: list[str], quant_type: str) -> None:
    """Replace each named nn.Linear by a bitsandbytes Linear4bit holding the same (frozen) weight; the weight is
    quantized when the module moves to the GPU. Computes in the weight's original dtype."""
    import bitsandbytes as bnb

    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear: nn.Linear = getattr(parent, child)
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      compute_dtype=linear.weight.dtype, quant_type=quant_type,
                                      device=linear.weight.device)
        quantized.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type=quant_type)
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        setattr(parent, child, quantized.cuda() if torch.cuda.is_available() else quantized)


def has_adapters(model: nn.Module) -> bool:
    return getattr(model, "lora_config", None) is not None


def is_adapter_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or name.startswith(("lora_A.", "lora_B."))


def freeze_adapted_bases(model: nn.Module, settings: LoraSettings) -> list[str]:
    """After the stage's freezing: the targeted parts train through their adapters only. Returns the adapter
    parameters that train; none is an error (the stage freezes every adapted part)."""
    from ..training.freezing import matches, resolve_pattern

    prefixes = [resolve_pattern(model, p) for p in settings.target]
    training = []
    for name, param in model.named_parameters():
        if is_adapter_parameter(name):
            if param.requires_grad:
                training.append(name)
        elif any(matches(name, p) for p in prefixes):
            param.requires_grad_(False)
    if not training:
        raise ValueError(f"model.lora adapts {settings.target} but the stage trains none of it: its adapters would "
                         "stay zero. Choose a stage that trains those parts (e.g. stage=s3) or other targets")
    frozen_targets = [p for p, prefix in zip(settings.target, prefixes) if not any(matches(n, prefix) for n in training)]
    if frozen_targets:
        log.warning("model.lora: the stage freezes %s, whose adapters stay zero", frozen_targets)
    return training


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W + B A · alpha / r) and put the plain layer back: the model has
    its original modules and names again, as peft's merge_and_unload does."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge(safe_merge=True)  # refuses NaN / inf results
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.get_base_layer())
    for attr in ("lora_settings", "lora_config", "peft_config"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


# ---------------------------------------------------------------------------------------------- states and files
def base_state_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's weights without adapters and under their original names (`x.base_layer.weight` -> `x.weight`):
    what the stage's export holds. QLoRA's 4-bit weights are dequantized (to their compute dtype)."""
    state = model.state_dict() if state is None else state
    quantized = _quantized_weights(model)
    out = {}
    for name, tensor in state.items():
        if is_adapter_parameter(name):
            continue
        plain = name.replace(".base_layer.", ".")
        if any(plain == q + ".weight" or plain.startswith(q + ".weight.") for q in quantized):
            continue  # the packed 4-bit weight and bitsandbytes' quantization constants: dequantized below
        out[plain] = tensor
    for module_name, weight in quantized.items():
        out[module_name + ".weight"] = weight
    return out


def _quantized_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """{plain module name: its dequantized weight} for every bitsandbytes 4-bit layer (QLoRA)."""
    out = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "Linear4bit":
            import bitsandbytes.functional as bnbf

            weight = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state).to(module.compute_dtype)
            out[name.replace(".base_layer", "")] = weight.cpu()
    return out


def adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapters' weights in peft's saved layout (`base_model.model.<module>.lora_A.weight`)."""
    from peft import get_peft_model_state_dict

    adapters = get_peft_model_state_dict(model, state_dict=state, adapter_name=ADAPTER_NAME)
    return {PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in adapters.items()}


def save_adapters(model: nn.Module, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """adapter_config.json + adapter_model.safetensors (peft's layout). `state`: the full state dict of a sharded
    (FSDP) model."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.lora_config.save_pretrained(str(directory))
    save_file(adapter_state_dict(model, state), directory / WEIGHTS_FILE, metadata={"format": "pt"})
    return directory


def read_adapters(directory: str | Path):
    """(LoraConfig, adapter tensors) of a saved adapter directory. Safetensors only: a pickled adapter_model.bin
    is refused, never read."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    from ..interop.local_files import file_inside, read_json_file

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"adapters: {directory} is not a directory (adapter_config.json + {WEIGHTS_FILE})")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        pickled = " (it holds a pickled adapter_model.bin, which is never loaded: save the adapters as " \
                  "safetensors)" if (directory / PICKLED_WEIGHTS_FILE).exists() else ""
        raise FileNotFoundError(f"adapters: {directory} has no {WEIGHTS_FILE}{pickled}")
    file_inside(directory, WEIGHTS_FILE)  # a regular file inside the directory, not a symlink elsewhere
    kind = read_json_file(file_inside(directory, CONFIG_FILE)).get("peft_type")
    if kind != "LORA":
        raise ValueError(f"adapters: {directory / CONFIG_FILE} describes {kind!r} adapters; only LoRA is supported")
    return LoraConfig.from_pretrained(str(directory)), load_file(weights)


def load_adapters(model: nn.Module, directory: str | Path) -> nn.Module:
    """Inject the saved adapters into `model` (in place) and load their weights; every adapter weight must be
    there and fit."""
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    config, tensors = read_adapters(directory)
    bad = [k for k in tensors if not k.startswith(PEFT_PREFIX)]
    if bad:
        raise ValueError(f"adapters: {directory}: keys outside peft's layout (base_model.model.*): {bad[:3]}")
    tensors = {k[len(PEFT_PREFIX):]: v for k, v in tensors.items()}
    # (peft saves target_modules shortened to name suffixes: which modules they select shows after injection)
    try:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    except ValueError as e:  # no module of this model matches
        raise ValueError(f"adapters: {directory} does not fit the model: {e}") from None
    expected = {k.replace(f".{ADAPTER_NAME}.", ".") for k in model.state_dict() if is_adapter_parameter(k)}
    if set(tensors) != expected:
        raise ValueError(f"adapters: {directory} does not fit the model: missing {sorted(expected - set(tensors))[:3]}"
                         f", unexpected {sorted(set(tensors) - expected)[:3]}")
    try:
        set_peft_model_state_dict(model, tensors, adapter_name=ADAPTER_NAME)
    except RuntimeError as e:  # shape mismatches (another rank r)
        raise ValueError(f"adapters: {directory} does not fit the model: {e}") from None
    model.lora_config = config
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable, adapter and total parameter counts."""
    params = dict(model.named_parameters())
    return {"trainable": sum(p.numel() for p in params.values() if p.requires_grad),
            "adapters": sum(p.numel() for n, p in params.items() if is_adapter_parameter(n)),
            "total": sum(p.numel() for p in params.values())}
