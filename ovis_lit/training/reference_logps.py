"""Precomputed reference log-probs for stage=dpo (`dpo.reference=precomputed`): one pass of the reference model over
the preference shards, writing copies of them whose pairs carry `ref_logps` [chosen, rejected].

The pairs are read and formatted exactly as the DPO stage reads them (the same config: processor, max_length,
pixel limits; `data.preference.PreferenceBuilder`), and the reference is the model the stage starts from (the
model config and `init_from`), so the stored values are what `reference=copy` would compute during training,
without a second model in memory. Records the stage would skip are copied unchanged (training counts them under
their reason, as before). Every other member of a record is copied byte for byte; nothing is decoded but the JSON
and the images the pairs use.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from ..data.datamodule import expand
from ..data.preference import PairCollate, PreferenceBuilder
from ..data.samples import SampleBuilder
from ..data.shards import read_shards
from ..model.sequence_logprobs import batch_sequence_logps
from ..rejection import Rejected
from .checkpoints import load_model_weights
from .run import build_processor, instantiate_datamodule, stage_settings

log = logging.getLogger(__name__)


def reference_model(cfg: DictConfig, device: str | torch.device = "cpu"):
    """The model the DPO stage starts from (the model config, then `init_from`), in eval mode."""
    source = instantiate(cfg.model)
    model = source.build()
    if cfg.get("init_from"):
        load_model_weights(model, cfg.init_from)
    return source, model.to(device).eval()


def precompute(cfg: DictConfig, output: str | Path, splits: tuple[str, ...] = ("train", "val"), pairs_per_batch: int = 8,
               model: torch.nn.Module | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Write the stage's preference shards (every source it uses, `splits`) with `ref_logps` into `output`.
    Returns {"written": pairs given log-probs, "copied": records copied unchanged by reason, "sources": {name:
    {split: pattern}}} (paste `sources` into a data config)."""
    settings = stage_settings(cfg)
    if "dpo" not in settings:
        raise ValueError(f"stage={settings['name']} is no DPO stage: precompute with stage=dpo and its data")
    source = None
    if model is None:
        source, model = reference_model(cfg, device)
    processor = build_processor(cfg, source)
    datamodule = instantiate_datamodule(cfg, settings)
    builder = PreferenceBuilder(SampleBuilder(processor, **datamodule.builder_kwargs))
    collate = PairCollate(processor.collate)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written, copied, sources = 0, Counter(), {}
    for name in datamodule.use:
        for split in splits:
            pattern = datamodule.sources[name].get(split)
            if not pattern:
                continue
            for url in expand(pattern):
                n, skipped = _one_shard(url, output / Path(url).name, builder, collate, model, pairs_per_batch)
                written, copied = written + n, copied + skipped
            sources.setdefault(name, {})[split] = str(output / Path(str(pattern)).name)
    return {"written": written, "copied": dict(copied), "sources": sources}


def _one_shard(url: str, path: Path, builder, collate, model, pairs_per_batch: int) -> tuple[int, Counter]:
    import webdataset as wds

    skipped: Counter = Counter()
    unreadable: Counter = Counter()
    pending: list[tuple[dict, Any]] = []  # (record, its pair or None), in shard order
    written = 0
    tmp = path.with_name(path.name + ".tmp")
    with wds.TarWriter(str(tmp), encoder=False) as sink:

        def flush() -> None:
            nonlocal written
            pairs = [pair for _, pair in pending if pair is not None]
            if pairs:
                batch = collate(pairs)
                device = next(model.parameters()).device
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                with torch.no_grad():
                    logps = batch_sequence_logps(model, batch)[0].double().cpu().tolist()
                values = iter(zip(logps[: len(pairs)], logps[len(pairs):]))
            for record, pair in pending:
                out = {k: v for k, v in record.items() if k == "__key__" or not k.startswith("__")}
                if pair is not None:
                    meta = json.loads(record["json"])
                    meta["ref_logps"] = list(next(values))
                    out["json"] = json.dumps(meta, ensure_ascii=False).encode()
                    written += 1
                sink.write(out)
            pending.clear()

        for record in read_shards([url], unreadable):
            try:
                pending.append((record, builder(record)))
            except Rejected as exn:  # copied as it is: the stage skips it, under this reason
                skipped[exn.reason] += 1
                pending.append((record, None))
            if sum(pair is not None for _, pair in pending) >= pairs_per_batch:
                flush()
        flush()
    tmp.rename(path)
    if unreadable:
        log.warning("%s: shard-level losses %s (not copied)", url, dict(unreadable))
    return written, skipped + unreadable
