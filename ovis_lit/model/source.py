"""What the `model` config group instantiates: a description of the Ovis model to build, not the model itself.

The LightningModule builds the model from it in `configure_model` (lazily: under FSDP the other ranks build on the
meta device and the weights are sharded after freezing), so the description is a small object of plain values. It
also travels in every checkpoint's hyper-parameters (`to_dict`), from which evaluation rebuilds the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import OmegaConf

from .build import build_ovis
from .connector import MLP_CONNECTORS, check_connector, ovis_tokenize_function
from .ovis import OvisModel


@dataclass
class ModelSource:
    """`spec`: the OvisSpec fields (random init, or the ViT and LLM from local directories); `pretrained`: an
    original-layout Ovis directory, which replaces the spec's parts (its `dtype` and `fast_path` still apply);
    `lora`: LoRA / QLoRA adapters (model/lora.py: LoraSettings), added by the LightningModule after the weights
    are loaded, null for none."""

    name: str = "ovis"
    spec: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    # `model.connector=mlp`: the connector arm (model/connector.py), written into the spec (`spec.connector`)
    connector: str | None = None
    lora: dict[str, Any] | None = None

    def __post_init__(self):  # Hydra hands nested nodes over as DictConfigs; plain values are kept (checkpoints)
        if OmegaConf.is_config(self.spec):
            self.spec = OmegaConf.to_container(self.spec, resolve=True)
        self.spec = dict(self.spec or {})
        self.pretrained = str(self.pretrained) if self.pretrained else None
        if OmegaConf.is_config(self.lora):
            self.lora = OmegaConf.to_container(self.lora, resolve=True)
        self.lora = self.lora_settings().to_dict() if self.lora else None  # checked, with its defaults filled in
        if self.connector is not None:
            check_connector(self.connector)
            if self.spec.get("connector", self.connector) != self.connector:
                raise ValueError(f"model.connector={self.connector} but model.spec.connector="
                                 f"{self.spec['connector']}: set one of them")
            self.spec["connector"] = self.connector
        if self.pretrained and self.spec.get("connector", "ovis") in MLP_CONNECTORS:
            raise ValueError(f"connector {self.spec['connector']} cannot start from an original Ovis directory "
                             f"({self.pretrained}): it has the Ovis head and table, no MLP")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSource":
        """From `to_dict` (checkpoints written before `name` was saved have only spec and pretrained)."""
        return cls(name=d.get("name") or "ovis", spec=d.get("spec") or {}, pretrained=d.get("pretrained"),
                   lora=d.get("lora"), connector=d.get("connector"))

    def lora_settings(self):
        """The LoraSettings of `lora` (None: no adapters)."""
        from .lora import LoraSettings

        return LoraSettings.from_config(self.lora)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build(self, device: str | None = None) -> OvisModel:
        """The model. `device="meta"`: the same model without weights (nothing is read or initialised)."""
        if self.pretrained:
            from ..interop.original import load_original, original_skeleton

            dtype = self.spec.get("dtype")
            if device == "meta":
                model = original_skeleton(self.pretrained, dtype=dtype)
            else:
                model, _ = load_original(self.pretrained, dtype=dtype)
            model.fast_path = self.spec.get("fast_path", True)
            # an ovis_hard / ovis_gumbel arm from Ovis weights: the same head and table, its own tokenize function
            vt = model.visual_tokenizer
            vt.tokenize_function = ovis_tokenize_function(self.spec.get("connector", "ovis"), vt.tokenize_function)
            return model
        return build_ovis(self.spec, device=device)

    def tokens_per_crop(self) -> int:
        """Visual tokens per crop (Ovis 1.6/2), from the checkpoint's config or a weightless (meta-device) build, so
        it is right whatever the backbone family."""
        if self.pretrained:
            from ..interop.original import original_tokens_per_crop, read_original_config

            return original_tokens_per_crop(read_original_config(self.pretrained))
        return build_ovis(self.spec, device="meta").visual_tokenizer.tokens_per_crop()

    def llm_vocab_size(self) -> int | None:
        """The LLM vocabulary the spec declares (None for a pretrained model or an LLM read from a directory)."""
        if self.pretrained:
            return None
        return ((self.spec.get("llm") or {}).get("config") or {}).get("vocab_size")


def build_model(model: dict[str, Any] | ModelSource, device: str | None = None) -> OvisModel:
    """The model a checkpoint's `hyper_parameters["model"]` (or a ModelSource) describes, with its LoRA adapters
    when it was trained with them (in full precision, also after QLoRA: what a checkpoint's state dict fills)."""
    source = model if isinstance(model, ModelSource) else ModelSource.from_dict(model)
    built = source.build(device)
    settings = source.lora_settings()
    if settings is not None:
        from dataclasses import replace

        from .lora import add_adapters

        add_adapters(built, replace(settings, quantize=None))
    return built
