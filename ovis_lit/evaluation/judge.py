"""A local LLM judge for the benchmarks that grade or extract answers with a language model (MMVet, MathVista).

The judge is any model evals/run.py can load (a train.py `.ckpt`, an ovis-lit export, an original Ovis directory;
asked text-only) or a transformers causal-LM directory. Everything is read from local files with
`trust_remote_code=False`: no download, no code from the checkpoint. `judge.kind` auto tells them apart by the path
(a file or an Ovis `config.json` -> ovis; any other directory -> causal_lm).

Calls follow the toolkits' judge calls: the prompt is one user turn (through the tokenizer's chat template when it
has one); temperature 0 is greedy; a retry at temperature t > 0 samples, seeded from (seed, prompt, t), so that a
run is repeatable and one answer does not depend on the others.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)

JUDGE_KINDS = ("auto", "ovis", "causal_lm")


class Judge(Protocol):
    def generate(self, prompt: str, temperature: float = 0.0, max_new_tokens: int = 128) -> str:
        """The judge's reply to one user turn (stripped)."""

    def describe(self) -> dict[str, Any]:
        """What the summary records: path, kind, dtype, seed."""


def call_seed(seed: int, prompt: str, temperature: float) -> int:
    return zlib.crc32(f"{seed}\x00{temperature}\x00{prompt}".encode("utf-8", "surrogatepass"))


def judge_kind(path: Path) -> str:
    from ..interop.consolidate import is_sharded_checkpoint

    if path.is_file() or is_sharded_checkpoint(path):  # a train.py .ckpt, or its FSDP shards
        return "ovis"
    config = path / "config.json"
    if config.is_file():
        try:
            model_type = str(json.loads(config.read_text()).get("model_type", ""))
        except (ValueError, AttributeError) as e:
            raise ValueError(f"judge {path}: unreadable config.json ({e})") from None
        return "ovis" if model_type.lower().startswith("ovis") else "causal_lm"
    raise FileNotFoundError(f"judge {path}: neither a checkpoint file nor a model directory with config.json")


def _sampling(temperature: float, prompt: str, seed: int) -> dict[str, Any]:
    if temperature <= 0:
        return {"do_sample": False}
    torch.manual_seed(call_seed(seed, prompt, temperature))
    return {"do_sample": True, "temperature": float(temperature), "top_p": 1.0, "top_k": 0}


class CausalLMJudge:
    """A transformers causal LM and its tokenizer, from local files only."""

    def __init__(self, model, tokenizer, description: dict[str, Any], seed: int = 0):
        self.model, self.tokenizer, self.description, self.seed = model.eval(), tokenizer, description, seed

    @classmethod
    def from_path(cls, path: Path, device: str = "cpu", dtype: str | None = None, seed: int = 0) -> CausalLMJudge:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..interop.local_files import safetensors_files
        from ..model.build import as_dtype

        safetensors_files(path)  # weights as safetensors inside the folder, as every other LLM load: never a pickle
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=as_dtype(dtype) if dtype else None,
                                                     local_files_only=True, use_safetensors=True,
                                                     trust_remote_code=False)
        model.to(device)
        description = {"path": str(path.resolve()), "kind": "causal_lm", "dtype": str(model.dtype).split(".")[-1]}
        return cls(model, tokenizer, description, seed)

    def _input_ids(self, prompt: str) -> torch.Tensor:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                     tokenize=True, return_dict=True)["input_ids"]
        else:
            ids = self.tokenizer(prompt)["input_ids"]
        return torch.tensor([ids], device=self.model.device)

    @torch.no_grad()
    def generate(self, prompt: str, temperature: float = 0.0, max_new_tokens: int = 128) -> str:
        input_ids = self._input_ids(prompt)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.random.fork_rng(devices=[]):
            out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=max_new_tokens, pad_token_id=pad,
                                      **_sampling(temperature, prompt, self.seed))
        return self.tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True).strip()

    def describe(self) -> dict[str, Any]:
        return {**self.description, "seed": self.seed}


class OvisJudge:
    """A model evals/run.py evaluates, asked text-only (no image) through its own chat format."""

    def __init__(self, model, processor, description: dict[str, Any], seed: int = 0):
        self.model, self.processor, self.description, self.seed = model, processor, description, seed

    @classmethod
    def from_path(cls, path: Path, device: str = "cpu", dtype: str | None = None, seed: int = 0,
                  processor: str | None = None) -> OvisJudge:
        from .loading import load_for_eval

        model, found, info = load_for_eval(path, processor, device, dtype)
        return cls(model, found, {"path": info["checkpoint"], "kind": "ovis", "format": info["format"],
                                  "dtype": info["dtype"]}, seed)

    @torch.no_grad()
    def generate(self, prompt: str, temperature: float = 0.0, max_new_tokens: int = 128) -> str:
        batch = self.processor.collate([self.processor.query(prompt, [])], padding_side="left")
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[]):
            new = self.model.generate(
                batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["pixel_values"].to(device),
                grid_thws=batch["grid_thws"].to(device) if "grid_thws" in batch else None,
                max_new_tokens=max_new_tokens, eos_token_id=[self.processor.tokenizer.eos_token_id],
                pad_token_id=self.processor.pad_token_id, **_sampling(temperature, prompt, self.seed))
        return self.processor.tokenizer.decode(new[0], skip_special_tokens=True).strip()

    def describe(self) -> dict[str, Any]:
        return {**self.description, "seed": self.seed}


def load_judge(path: str | Path, kind: str = "auto", device: str = "cpu", dtype: str | None = None, seed: int = 0,
               processor: str | None = None) -> Judge:
    if kind not in JUDGE_KINDS:
        raise ValueError(f"judge.kind {kind!r}: one of {JUDGE_KINDS}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"judge {path} does not exist (a local checkpoint or model directory)")
    kind = judge_kind(path) if kind == "auto" else kind
    log.info("loading the judge %s (%s)", path, kind)
    if kind == "ovis":
        return OvisJudge.from_path(path, device, dtype, seed, processor)
    return CausalLMJudge.from_path(path, device, dtype, seed)


_LOADED: dict[str, Judge] = {}  # one copy of each judge per process, shared by the benchmarks that use it


class LazyJudge:
    """Loads the judge at its first call (once per process for the same settings): evals/run.py checks benchmark
    files before any model is loaded, and a run whose judged benchmarks have nothing to grade never loads it."""

    def __init__(self, spec: dict[str, Any] | None):
        self.spec = {k: v for k, v in (spec or {}).items() if v is not None}
        self.spec.setdefault("kind", "auto")

    def check(self) -> None:
        """A judge that cannot be loaded fails the run before the evaluated model is loaded."""
        if not self.spec.get("path"):
            raise ValueError("this benchmark grades with an LLM judge: set judge.path (a local checkpoint or a "
                             "transformers causal-LM directory)")
        if self.spec["kind"] not in JUDGE_KINDS:
            raise ValueError(f"judge.kind {self.spec['kind']!r}: one of {JUDGE_KINDS}")
        if not Path(self.spec["path"]).exists():
            raise FileNotFoundError(f"judge.path {self.spec['path']} does not exist")

    def _loaded(self) -> Judge:
        key = json.dumps(self.spec, sort_keys=True, default=str)
        if key not in _LOADED:
            self.check()
            spec = dict(self.spec)
            if spec.get("device", "auto") == "auto":
                spec["device"] = "cuda" if torch.cuda.is_available() else "cpu"
            _LOADED[key] = load_judge(**spec)
        return _LOADED[key]

    def generate(self, prompt: str, temperature: float = 0.0, max_new_tokens: int = 128) -> str:
        return self._loaded().generate(prompt, temperature, max_new_tokens)

    def describe(self) -> dict[str, Any]:
        key = json.dumps(self.spec, sort_keys=True, default=str)
        if key in _LOADED:
            return _LOADED[key].describe()
        return {"path": str(self.spec.get("path")), "kind": self.spec["kind"], "loaded": False}
