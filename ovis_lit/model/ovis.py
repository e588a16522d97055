"""The Ovis model: visual tokenizer + visual embedding table + any causal LLM from transformers.

Text ids carry placeholders: -300 (one per visual token) and -301..-305 (indicator tokens). `merge` turns them into
the LLM's inputs_embeds: text embeddings, indicator rows of the visual table, and at the k-th -300 the k-th visual
embedding.

The plain path is the Ovis idea as written: ViT features -> visual head -> `tokenize` (probabilistic visual tokens)
-> expectation over the visual embedding table -> merge into the text embeddings -> the LLM (and its loss) over the
padded batch. `fast_path` (the default, what training runs) computes the same function faster:
- the softmax fused into the table read (`VisualEmbedding`, softmax in float32/float64 only, where it is exactly
  `tokenize` then the table) and one [V, d] table gradient for the visual and indicator rows;
- the training loss on logits at supervised positions only, over packed rows (`packing.pack_rows`) with packed
  sdpa (`packed_attention`) instead of a padded batch (`sparse_loss`).
Both are tested equal (loss, logits, every gradient), and against the original's gradients on the fixtures.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..constants import IGNORE_ID, IMAGE_ATOM_ID, INDICATOR_IDS
from . import greedy_loop, inplace_mlp, lean_decode, packed_attention, packed_prefill, packed_weights, sparse_loss
from .checkpointing import checkpoint_kwargs, checkpoint_mode
from .embedding import VisualEmbedding
from .vision import crop_side, keep_residual_stream_contiguous
from .visual_tokenizer import VisualFeatures, VisualTokenizer


@dataclass
class MergedInputs:
    inputs_embeds: torch.Tensor  # [B, L, d], already multiplied by the LLM's embedding scale (Gemma)
    attention_mask: torch.Tensor  # [B, L], the caller's
    labels: torch.Tensor | None  # [B, L], the caller's with IGNORE_ID at visual and indicator positions
    visual_tokens: torch.Tensor | None  # [N crops, T, V - n_ind] (None without images, or for an MLP connector)


@dataclass
class OvisOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor | None  # full [B, L, vocab] only when asked for
    n_label_tokens: int
    merged: MergedInputs


class OvisModel(nn.Module):
    def __init__(self, visual_tokenizer: VisualTokenizer | VisualFeatures, vte: VisualEmbedding | nn.Embedding,
                 llm: nn.Module, fast_path: bool = True):
        """`visual_tokenizer` + `vte`: the connector (model/connector.py), the Ovis head + table by default."""
        super().__init__()
        if vte.num_embeddings != visual_tokenizer.vocab_size:
            raise ValueError(f"vte has {vte.num_embeddings} rows, visual vocab is {visual_tokenizer.vocab_size}")
        if vte.embedding_dim != llm.get_input_embeddings().embedding_dim:
            raise ValueError("vte width must equal the LLM hidden size")
        self.visual_tokenizer = visual_tokenizer
        self.vte = vte
        self.llm = llm
        self.fast_path = fast_path  # the speed-ups of the module docstring; False: the plain path, same function
        # generation's speed-ups (`generate`); False: transformers' generate on the padded batch, the same answers
        self.packed_prefill = True  # `packed_prefill.py`: the prompts' KV cache without computing the padding
        self.packed_decode_weights = True  # `packed_weights.py`: decode steps' matmuls on MKL-packed weights (CPU, kept)
        # `lean_decode.py`: decode steps in a plain loop over the LLM's modules, into a cache with room (`kv_room.py`)
        self.lean_decode = True
        self.greedy_loop = True  # `greedy_loop.py`: plain greedy decoding without `generate`'s per-step machinery
        self.inplace_mlps = True  # `inplace_mlp.py`: the ViT's and LLM's SwiGLU MLPs with two buffers fewer
        # sdpa that can attend within each packed sample; without sample boundaries (every call but the fast path's
        # packed loss) it is transformers' sdpa itself
        packed_attention.enable(llm)

    @property
    def fast_path(self) -> bool:
        return self._fast_path

    @fast_path.setter
    def fast_path(self, enabled: bool) -> None:
        # The ViT's contiguous residual stream is a speed-up too: it changes float32 rounding (<= 2e-7 in the visual
        # tokens of the Ovis2 fixture), so the plain path keeps the original's memory layout, bit for bit.
        self._fast_path = bool(enabled)
        keep_residual_stream_contiguous(self.visual_tokenizer.backbone, self._fast_path)

    def set_activation_checkpointing(self, vision: bool | str = False, llm: bool | str = False) -> None:
        """Per ViT / LLM layer: "none", "full" (recompute the layer in backward) or "selective" (keep matmul and
        attention outputs, recompute the rest); true/false mean full/none. See `checkpointing.py`."""
        for module, value in ((self.visual_tokenizer.backbone, vision), (self.llm, llm)):
            mode = checkpoint_mode(value)
            if module.is_activation_checkpointing:
                module.activation_checkpointing_disable()
            if mode != "none":
                module.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs(mode))

    # ----------------------------------------------------------------------------------------------- embeddings
    @property
    def n_indicators(self) -> int:
        return self.visual_tokenizer.n_indicators

    def _embed_scale(self, dtype: torch.dtype) -> torch.Tensor | None:
        # transformers 5 puts Gemma's sqrt(d) scale inside the text embedding module; visual embeddings took the
        # same factor in the original, so they get it here too.
        scale = getattr(self.llm.get_input_embeddings(), "embed_scale", None)
        return None if scale is None else scale.to(dtype)

    def _scaled(self, embeds: torch.Tensor) -> torch.Tensor:
        scale = self._embed_scale(embeds.dtype)
        return embeds if scale is None else embeds * scale

    def embed_visual(
        self, pixel_values: torch.Tensor, grid_thws: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops [N, 3, S, S] -> (visual tokens [N, T, V - n_ind], scaled LLM-space embeddings [N, T, d]); an MLP
        connector has no visual tokens (None).
        Native resolution: packed patches + grid_thws -> [tokens, 1, ...] (one "crop" per visual token)."""
        tokens, visual, _ = self._embed_crops(pixel_values, None, grid_thws)
        return tokens, visual

    def _embed_crops(
        self, pixel_values: torch.Tensor, indicator_rows: torch.Tensor | None = None,
        grid_thws: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(visual tokens, scaled visual embeddings, unscaled table rows of `indicator_rows` or None)."""
        dtype = self.llm.get_input_embeddings().weight.dtype
        tokenizer = self.visual_tokenizer
        if tokenizer.projects:  # an MLP connector (model/connector.py): embeddings straight from the projector
            visual = tokenizer.embeddings(pixel_values.to(self._visual_dtype()), grid_thws)
            indicator = None if indicator_rows is None else self.vte(indicator_rows)
            return None, self._scaled(visual.to(dtype)), indicator
        pixel_values = pixel_values.to(self._visual_dtype())
        if self.fast_path and tokenizer.softmax_in_blocks():  # inference: the tokens below, bit for bit, in less memory
            tokens = tokenizer.tokens_in_blocks(pixel_values, grid_thws)
        else:
            logits = tokenizer.logits(pixel_values, grid_thws)  # ViT features -> visual head
            if self._fuse_softmax(logits):
                tokens, visual, indicator = self.vte(logits, indicator_rows, softmax=True)
                return tokens, self._scaled(visual.to(dtype)), indicator
            tokens = tokenizer.tokenize(logits)  # probabilistic visual tokens
        # each token's embedding: the expectation of the table rows under it (indicators: their own rows)
        embedded = self.vte(tokens, indicator_rows, fused=self.fast_path)
        visual, indicator = embedded if indicator_rows is not None else (embedded, None)
        return tokens, self._scaled(visual.to(dtype)), indicator

    def _fuse_softmax(self, logits: torch.Tensor) -> bool:
        """The one place the fused softmax-table read is chosen: on the fast path, where it is exactly the plain
        path's function (`tokenize` with softmax, then the table)."""
        return self.fast_path and self.visual_tokenizer.tokenize_function == "softmax" and self.vte.fuses_softmax(logits)

    def _visual_dtype(self) -> torch.dtype:
        return self.visual_tokenizer.head[0].weight.dtype

    def embed_inputs(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, grid_thws: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(scaled text embeddings [B, L, d] with indicator rows filled in, visual tokens, scaled visual embeddings).

        Atoms and pads get a placeholder text embedding. With crops, the indicator rows come from the same table read
        as the visual tokens (`_embed_crops`).
        """
        text = self.llm.get_input_embeddings()(input_ids.clamp(min=0))
        is_indicator = (input_ids <= INDICATOR_IDS[0]) & (input_ids >= INDICATOR_IDS[-1])
        rows = None
        if bool(is_indicator.any()):
            rows = self.vte.num_embeddings - self.n_indicators + (INDICATOR_IDS[0] - input_ids[is_indicator])
        tokens = visual = indicator = None
        if pixel_values is not None and pixel_values.shape[0]:
            tokens, visual, indicator = self._embed_crops(pixel_values, rows, grid_thws)
        elif rows is not None:
            indicator = self.vte(rows)
        if indicator is not None:
            text = text.index_put(tuple(is_indicator.nonzero(as_tuple=True)), self._scaled(indicator.to(text.dtype)))
        return text, tokens, visual

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text ids -> scaled embeddings; indicator ids take their vte rows; atoms and pads get a placeholder."""
        return self.embed_inputs(input_ids)[0]

    # ----------------------------------------------------------------------------------------------------- merge
    def merge(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None,
        pixel_values: torch.Tensor | None, grid_thws: torch.Tensor | None = None,
    ) -> MergedInputs:
        """The LLM's inputs: text embeddings, with each -300 replaced by its visual token's embedding.

        The ids hold one -300 per visual token (the processor expands each crop into `tokens_per_crop` of them, each
        native-resolution image into one per merged patch), so this is a masked assignment: the k-th -300 of the
        batch, row-major, takes the k-th visual embedding (crops in batch order, each crop's tokens in order).
        Attention mask and padding are the caller's; labels at visual and indicator positions are never supervised.
        """
        is_atom = input_ids == IMAGE_ATOM_ID
        n_visual = self._n_visual_tokens(int(is_atom.sum()), pixel_values, grid_thws)
        embeds, visual_tokens, visual_embeds = self.embed_inputs(
            input_ids, pixel_values if n_visual else None, grid_thws if n_visual else None
        )
        if visual_embeds is not None:
            embeds = embeds.index_put(is_atom.nonzero(as_tuple=True), visual_embeds.reshape(-1, embeds.shape[-1]))
        elif self.training and any(p.requires_grad for p in self.visual_tokenizer.parameters()):
            # Keep every visual parameter in the autograd graph (zero-weighted) so DDP/FSDP see no unused ones.
            dummy, dummy_grid = self._dummy_visual_input(input_ids.device)
            _, dummy_embeds = self.embed_visual(dummy, dummy_grid)
            embeds = embeds + 0.0 * dummy_embeds.sum()
        # Visual and indicator positions are never supervised, whatever the caller's labels say.
        labels = None if labels is None else labels.masked_fill(input_ids < 0, IGNORE_ID)
        return MergedInputs(embeds, attention_mask, labels, visual_tokens)

    def _n_visual_tokens(
        self, n_atoms: int, pixel_values: torch.Tensor | None, grid_thws: torch.Tensor | None
    ) -> int:
        """The visual tokens the images make, checked equal to the ids' -300 placeholders (`n_atoms`)."""
        native = self.visual_tokenizer.native_resolution
        if native and pixel_values is not None and grid_thws is None:
            raise ValueError("a native-resolution model needs grid_thws with pixel_values")
        if pixel_values is None:
            n_visual = 0
        elif native:
            n_visual = self.visual_tokenizer.backbone.tokens_of(grid_thws)
        else:
            n_visual = pixel_values.shape[0] * self.visual_tokenizer.tokens_per_crop()
        if n_atoms != n_visual:
            n_crops = 0 if pixel_values is None else len(pixel_values)
            what = "in grid_thws" if native else f"in pixel_values ({n_crops} crops)"
            raise ValueError(f"the batch has {n_atoms} image placeholders (-300) but {n_visual} visual tokens {what}")
        return n_visual

    def _dummy_visual_input(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The smallest visual input: one crop, or one hs x hs-patch image for native resolution."""
        backbone = self.visual_tokenizer.backbone
        if self.visual_tokenizer.native_resolution:
            cfg, hs = backbone.config, self.visual_tokenizer.hidden_stride
            patch_dim = cfg.num_channels * cfg.temporal_patch_size * cfg.patch_size**2
            grid = torch.tensor([[1, hs, hs]], device=device)
            return torch.zeros(hs * hs, patch_dim, device=device), grid
        side = crop_side(backbone)
        return torch.zeros(1, 3, side, side, device=device), None

    # --------------------------------------------------------------------------------------------------- forward
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None, return_logits: bool = False, grid_thws: torch.Tensor | None = None,
    ) -> OvisOutput:
        """`merge` (images -> visual tokens -> embeddings at the -300s), then the LLM and its next-token loss."""
        merged = self.merge(input_ids, attention_mask, labels, pixel_values, grid_thws)
        n_label = 0 if merged.labels is None else int((merged.labels[:, 1:] != IGNORE_ID).sum())
        if self.fast_path and sparse_loss.has_sparse_logits(self.llm) and labels is not None and not return_logits:
            loss = sparse_loss.next_token_loss(self.llm, merged.inputs_embeds, merged.attention_mask, merged.labels)
            return OvisOutput(loss, None, n_label, merged)
        # The LLM over the padded batch, with its own loss: the mean next-token CE over supervised positions, as a
        # sum / count (the `sparse_loss` definition; an all-masked batch gives 0 rather than NaN).
        loss_kwargs = {} if labels is None else {"num_items_in_batch": torch.tensor(max(n_label, 1))}
        out = self.llm(inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask, labels=merged.labels,
                       use_cache=False, **loss_kwargs)
        return OvisOutput(out.loss, out.logits, n_label, merged)

    # ------------------------------------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None = None,
        grid_thws: torch.Tensor | None = None, **generate_kwargs,
    ) -> torch.Tensor:
        """Batched generation with the LLM's own KV cache (Gemma 2's sliding-window cache included).

        The batch must be left-padded (`collate(..., padding_side="left")`): every prompt ends at the last column.
        Returns only the new tokens [B, new]; samples that hit EOS early are padded with the pad id.
        """
        if not bool(attention_mask[:, -1].all()):
            raise ValueError("generate needs a left-padded batch (collate(..., padding_side='left'))")
        with contextlib.ExitStack() as speedups:
            if self.inplace_mlps:
                speedups.enter_context(inplace_mlp.inplace_mlps(self))
            merged = self.merge(input_ids, attention_mask, None, pixel_values, grid_thws)
            cfg = self.llm.generation_config
            generate_kwargs.setdefault(
                "pad_token_id", cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id
            )
            lean = self.lean_decode and lean_decode.applies(self.llm)
            prefilled = None
            if (self.packed_prefill and "cache" not in generate_kwargs
                    and packed_prefill.applies(self.llm, attention_mask)):
                # the prompts' KV cache from one unpadded row; decoding then computes only the last column
                room = _new_tokens(generate_kwargs, cfg, input_ids.shape[1]) if lean else 0
                prefilled = packed_prefill.prefill_cache(self.llm, merged.inputs_embeds, attention_mask, room=room)
            if self.packed_decode_weights and packed_weights.applies(self.llm):
                speedups.enter_context(packed_weights.packed_linears(self.llm, rows=input_ids.shape[0]))
            if lean:
                speedups.enter_context(lean_decode.lean_decode_steps(self.llm))
            greedy = greedy_loop.plan(self.llm, generate_kwargs) if self.greedy_loop else None
            if greedy is not None:
                return greedy_loop.greedy_tokens(
                    self.llm, merged.inputs_embeds, merged.attention_mask, greedy, cache=prefilled
                )
            if prefilled is not None:
                generate_kwargs["cache"] = prefilled
            return self.llm.generate(
                inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask, **generate_kwargs
            )

    @contextlib.contextmanager
    def generation_speedups(self, enabled: bool) -> Iterator[None]:
        """Inside: `generate`'s speed-ups (packed prefill, packed decode weights, lean decode, greedy loop, in-place
        MLPs) all on or all off."""
        names = ("packed_prefill", "packed_decode_weights", "lean_decode", "greedy_loop", "inplace_mlps")
        saved = [getattr(self, name) for name in names]
        for name in names:
            setattr(self, name, bool(enabled))
        try:
            yield
        finally:
            for name, value in zip(names, saved):
                setattr(self, name, value)


def _new_tokens(generate_kwargs: dict, config, prompt_length: int) -> int:
    """How many positions generation may add to the cache: max_new_tokens, else max_length less the prompt (a
    cache with room grows beyond it if needed, so this only sizes its first buffer)."""
    new = generate_kwargs.get("max_new_tokens")
    if new is None and generate_kwargs.get("max_length") is not None:
        new = generate_kwargs["max_length"] - prompt_length
    if new is None:
        new = config.max_new_tokens if config.max_new_tokens is not None else config.max_length - prompt_length
    return max(int(new), 1)
