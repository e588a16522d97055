"""LightningDataModule streaming WebDataset shards through formatting and preprocessing in worker processes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any, Callable

import lightning as L
import torch
from torch.utils.data import DataLoader
from webdataset.shardlists import expand_urls

from ..processing.image_decoding import MAX_IMAGE_PIXELS
from ..processing.processor import OvisProcessor
from .preference import PairCollate, PreferenceBuilder
from .samples import SampleBuilder
from .stream import BatchStream, Source, StreamState, WorkerPosition, rank_world
from .video_records import DEFAULT_FRAMES

log = logging.getLogger(__name__)


def expand(patterns: list[str] | str) -> list[str]:
    """Brace patterns ("shards-{000000..000009}.tar") -> shard paths."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return [url for pattern in patterns for url in expand_urls(pattern)]


class OvisDataModule(L.LightningDataModule):
    """Training and validation batches for one stage.

    `sources` names shard sets ({name: {"train": patterns, "val": patterns}}); the stage picks which it `use`s,
    as a list (equal weights) or {name: weight} (samples are drawn from the sets in these proportions).
    The stream position of every worker travels in the trainer's checkpoints (`state_dict`), so resuming a run
    continues the data exactly where it stopped.

    Batches hold `batch_size` samples, or, with `token_budget`, as many samples as fit in that many tokens (visual +
    text, per micro-batch and rank; data/batching.py): for Ovis2.5, whose samples at native resolution differ in
    visual tokens. A sample over the budget is skipped and counted (`over_token_budget`); with `max_length` at most
    the budget none is.

    With `text_only`, every record becomes a text-only sample (its images and their marks dropped, `SampleBuilder`):
    batches without pixels, which train the LLM alone (stage s0).

    With `pairs`, records are preference pairs (`data/preference.py`, for stage=dpo): `batch_size` counts pairs, both
    answers of a pair go into the same micro-batch, and with `reference_logps` each pair must carry precomputed
    reference log-probs.
    """

    def __init__(
        self,
        sources: dict[str, dict[str, Any]],
        use: list[str] | dict[str, float],
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        max_length: int = 2048,
        captions_as: str = "template",
        caption_template: str = "<image>\n",
        caption_prompts: list[str] | None = None,
        truncate: bool = True,
        max_image_pixels: int | None = MAX_IMAGE_PIXELS,
        video_frames: int = DEFAULT_FRAMES,
        text_only: bool = False,
        prepare: Callable[..., Any] | None = None,
        heldout: str | None = None,
        heldout_instruction: str | None = None,
        heldout_video: dict[str, Any] | None = None,
        heldout_extra: dict[str, str] | None = None,
        processor: OvisProcessor | None = None,
        token_budget: int | None = None,
        pairs: bool = False,
        reference_logps: bool = False,
    ):
        super().__init__()
        unknown = set(use) - set(sources)
        if unknown:
            raise ValueError(f"stage uses unknown data sources {sorted(unknown)}; defined: {sorted(sources)}")
        self.sources = sources
        # a Mapping, not just a dict: Hydra's instantiate passes {name: weight} as a DictConfig
        weights = {k: float(v) for k, v in use.items()} if isinstance(use, Mapping) else {n: 1.0 for n in use}
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"data source weights must be >= 0 with at least one > 0, got {weights}")
        # weight 0 turns a source off (Hydra merges a dict override into the stage's mixture, so
        # `stage.data.use={chat:1.0,caption:0}` is how a command line drops a source)
        self.use = {k: w for k, w in weights.items() if w > 0}
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.token_budget = token_budget  # validation batches by the same budget
        if token_budget is not None and token_budget < max_length:
            log.warning("data.token_budget %d < max_length %d: samples longer than the budget are skipped "
                        "(over_token_budget)", token_budget, max_length)
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.prepare = prepare
        self.heldout = heldout  # a held-out benchmark file scored after training (train.py's `evaluate`)
        self.heldout_instruction = heldout_instruction  # the answer instruction its prompts end with
        self.heldout_video = heldout_video  # a held-out video benchmark's options (models that read videos)
        self.heldout_extra = dict(heldout_extra or {})  # more held-out sets scored after training: {kind: TSV}
        self.processor = processor
        self.pairs = pairs
        self.reference_logps = reference_logps
        self.builder_kwargs = dict(
            max_length=max_length,
            captions_as=captions_as,
            caption_template=caption_template,
            caption_prompts=list(caption_prompts or ["Describe the image."]),
            truncate=truncate,
            max_image_pixels=max_image_pixels,  # larger images are skipped, undecoded
            video_frames=video_frames,  # frames per video, sampled uniformly
            text_only=text_only,  # images and marks dropped: text-only samples (stage s0)
        )
        self.stream_state = StreamState()
        # Skips in the batches consumed (BatchStream documents exactly what a batch's counts hold), this rank:
        self.skipped: Counter = Counter()  # training, over the whole run (saved in checkpoints)
        self.consumed = 0  # training samples consumed, over the whole run (saved in checkpoints; varies by batch
        # under a token budget)
        self.val_skipped: Counter = Counter()  # validation, in the latest validation pass
        self._val_pass_step: int | None = None  # the training step of that pass

    def attach(self, processor: OvisProcessor) -> None:
        """What comes from the model: its processor (which expands each image into the model's visual tokens)."""
        self.processor = processor

    # ------------------------------------------------------------------------------------------------ set-up
    def prepare_data(self) -> None:
        if self.prepare is not None:
            # e.g. build the synthetic shards if they are missing (rank 0 only); `videos` / `thinking`: whether the
            # attached model reads videos / its chat format has thinking (Ovis2.5), so that a data builder makes its
            # video and thinking splits only for such a model; `sources`: the sets this stage draws from, so that a
            # builder makes optional sets (shapes_hard, digits) only when they are used
            self.prepare(videos=bool(getattr(self.processor, "takes_video", False)),
                         thinking=bool(getattr(self.processor, "takes_thinking", False)),
                         sources=sorted(self.use),
                         **({"preference": True} if self.pairs else {}))

    def _sources(self, split: str) -> list[Source]:
        return [
            Source(name, tuple(expand(self.sources[name][split])) if self.sources[name].get(split) else (), weight)
            for name, weight in self.use.items()
        ]

    def _builder(self) -> SampleBuilder | PreferenceBuilder:
        if self.processor is None:
            raise RuntimeError("OvisDataModule.attach(processor) must be called before loading")
        samples = SampleBuilder(self.processor, **self.builder_kwargs)
        return PreferenceBuilder(samples, self.reference_logps) if self.pairs else samples

    def _collate(self) -> Callable[[list], dict]:
        return PairCollate(self.processor.collate) if self.pairs else self.processor.collate

    def _loader(self, stream: BatchStream, workers: int) -> DataLoader:
        return DataLoader(
            stream,
            batch_size=None,  # the stream batches itself (variable-length samples, skip counts per batch)
            num_workers=workers,
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )

    def train_dataloader(self) -> DataLoader:
        sources = self._sources("train")
        if not any(s.urls for s in sources):
            raise ValueError(f"no training shards in sources {list(self.use)}")
        stream = BatchStream(
            sources,
            self._builder(),
            self._collate(),
            self.batch_size,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer,
            train=True,
            state=self.stream_state,
            num_workers=self.num_workers,
            token_budget=self.token_budget,
        )
        return self._loader(stream, self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        sources = [s for s in self._sources("val") if s.urls]
        if not sources:
            return []
        workers = min(self.num_workers, min(len(s.urls) for s in sources))
        stream = BatchStream(
            sources, self._builder(), self._collate(), self.val_batch_size, train=False, num_workers=workers,
            token_budget=self.token_budget,
        )
        return self._loader(stream, workers)

    # -------------------------------------------------------------------------------------- stream position
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning hands every batch here right before its step (after the loader's prefetch: what is recorded is
        what the model consumes, never a batch read ahead and dropped by an interruption)."""
        trainer = self.trainer
        if trainer is not None and isinstance(batch, dict):
            if trainer.training:
                self.observe(batch)
            elif trainer.validating and not trainer.sanity_checking:  # the sanity check's batches come again
                self.observe_validation(batch, trainer.global_step)
        return batch

    def observe(self, batch: dict[str, Any]) -> None:
        """A consumed training batch: its worker's stream position (exact resume) and skip counts."""
        stream = batch["stream"]
        worker = int(stream["worker"])
        self.stream_state.workers[worker] = WorkerPosition({k: list(v) for k, v in stream["sources"].items()}, int(stream["draws"]))
        self.stream_state.next_worker = (worker + 1) % max(1, self.num_workers)
        self.skipped.update(batch.get("skipped", {}))
        self.consumed += int(batch.get("pairs", batch["input_ids"].shape[0]))  # records: a pair is one

    def observe_validation(self, batch: dict[str, Any], step: int) -> None:
        """A consumed validation batch of the pass at training step `step` (a new step: a new pass)."""
        if step != self._val_pass_step:
            self.val_skipped, self._val_pass_step = Counter(), step
        self.val_skipped.update(batch.get("skipped", {}))

    def state_dict(self) -> dict[str, Any]:
        """This rank's stream position and skip counts; under DDP/FSDP every rank's (Lightning calls this on all
        ranks when it saves, and only rank 0 writes the file, so the positions are gathered here)."""
        local = {"stream": self.stream_state.to_dict(), "skipped": dict(self.skipped), "consumed": self.consumed,
                 "layout": self.stream_layout()}
        rank, world = rank_world()
        if world == 1:
            return local
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, local)
        return {"ranks": gathered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank, world = rank_world()
        if "ranks" in state:
            if len(state["ranks"]) != world:
                raise ValueError(
                    f"the checkpoint holds data-stream positions for {len(state['ranks'])} ranks but this run has "
                    f"{world}: resume with the same number of processes (or start a new run with init_from)"
                )
            state = state["ranks"][rank]
        elif world > 1:
            raise ValueError("the checkpoint was saved by one process; resume it with one process")
        saved, now = state.get("layout"), self.stream_layout()
        # a key missing from either side was not set (an older checkpoint has no token_budget: it batched by count)
        changed = sorted(k for k in set(saved or {}) | set(now) if (saved or {}).get(k) != now.get(k))
        if saved is not None and changed:
            raise ValueError(
                f"cannot resume the data stream exactly: {', '.join(changed)} changed since the checkpoint "
                f"(saved {[saved.get(k) for k in changed]}, now {[now.get(k) for k in changed]}). Resume "
                "with the same data settings, or start a new run from these weights with init_from"
            )
        self.stream_state = StreamState.from_dict(state.get("stream"))
        self.skipped = Counter(state.get("skipped", {}))
        self.consumed = int(state.get("consumed", 0))

    def stream_layout(self) -> dict[str, Any]:
        """What the order of the training stream depends on, besides the positions: a resume must keep it."""
        return {
            "num_workers": self.num_workers,
            "seed": self.seed,
            "batch_size": self.batch_size if self.token_budget is None else None,  # unused under a budget
            "token_budget": self.token_budget,
            "shuffle_buffer": self.shuffle_buffer,
            "use": dict(self.use),
            "train_urls": {name: str(self.sources[name].get("train")) for name in sorted(self.use)},
            **({"pairs": True} if self.pairs else {}),  # (absent when False: older checkpoints have no such key)
        }


def batch_size_of(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


def tokens_of(batch: dict[str, Any]) -> int:
    """Tokens after image expansion (set by the LightningModule); text tokens before the first step."""
    return int(batch.get("n_tokens", int(batch["attention_mask"].sum())))
