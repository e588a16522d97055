"""Connectors: what turns merged ViT patch features into the LLM's input embeddings (issue 17's arms).

- `ovis`: the visual head (Linear, LayerNorm) -> softmax over a visual vocabulary -> expectation over the visual
  embedding table (`VisualTokenizer` + `VisualEmbedding`, unchanged).
- `ovis_hard`: the same parts with the original's straight-through one-hot (`st_argmax`).
- `ovis_gumbel`: the same parts with hard Gumbel-softmax samples (`gumbel_argmax`), whose temperature
  `training/tau.py: TauAnnealing` anneals over each stage.
- `mlp`: the LLaVA-1.5 projector, Linear -> GELU -> Linear, hidden width = the LLM's width by default.
- `mlp_wide`: Linear to a hidden width equal to the visual vocabulary size -> GELU -> Linear to the LLM's width:
  the Ovis head and table without the LayerNorm, the softmax and the table's "expectation over words" meaning.

Both MLP arms keep the model's contracts: one embedding per `-300`, and the indicator tokens (-301..-305) read rows
of a small learned table (`IndicatorEmbedding`, the `vte` module). Their projector is the visual tokenizer's `head`,
so the stage patterns (`visual_tokenizer.head`, `vte`, `visual_tokenizer`) select the same roles in every arm.
"""

from __future__ import annotations

from torch import nn

from .embedding import VisualEmbedding
from .visual_tokenizer import VisualFeatures

OVIS_CONNECTORS = {"ovis": None, "ovis_hard": "st_argmax", "ovis_gumbel": "gumbel_argmax"}  # -> tokenize function
MLP_CONNECTORS = ("mlp", "mlp_wide")
CONNECTORS = tuple(OVIS_CONNECTORS) + MLP_CONNECTORS


def check_connector(connector: str) -> str:
    if connector not in CONNECTORS:
        raise ValueError(f"unknown connector {connector!r}; choose from {list(CONNECTORS)}")
    return connector


def ovis_tokenize_function(connector: str, tokenize_function: str) -> str:
    """The tokenize function an Ovis arm runs: `ovis` keeps the spec's, `ovis_hard` / `ovis_gumbel` set theirs
    (a spec that asks for another non-default one contradicts the connector and is refused)."""
    wanted = OVIS_CONNECTORS[check_connector(connector)]
    if wanted is None:
        return tokenize_function
    if tokenize_function not in ("softmax", wanted):
        raise ValueError(f"connector {connector} tokenizes with {wanted}, the spec asks for {tokenize_function}")
    return wanted


def ovis_parameters(feature_dim: int, vocab_size: int, n_indicators: int, llm_dim: int) -> int:
    """Parameters of the Ovis head (Linear without bias + LayerNorm over V - n words) and table (V x d)."""
    words = vocab_size - n_indicators
    return feature_dim * words + 2 * words + vocab_size * llm_dim


def mlp_parameters(feature_dim: int, hidden: int, llm_dim: int, n_indicators: int) -> int:
    """Parameters of an MLP connector: two biased Linears and the indicator table."""
    return feature_dim * hidden + hidden + hidden * llm_dim + llm_dim + n_indicators * llm_dim


def matched_hidden(feature_dim: int, vocab_size: int, n_indicators: int, llm_dim: int) -> int:
    """The MLP hidden width whose parameters come closest to the Ovis head + table of the same model (within half
    a hidden unit's parameters, feature_dim + 1 + llm_dim)."""
    target = ovis_parameters(feature_dim, vocab_size, n_indicators, llm_dim)
    per_unit = feature_dim + 1 + llm_dim
    return max(1, round((target - llm_dim - n_indicators * llm_dim) / per_unit))


def mlp_hidden(connector: str, hidden: int | str | None, feature_dim: int, vocab_size: int, n_indicators: int,
               llm_dim: int) -> int:
    """The hidden width of an MLP arm: an explicit width, "matched" (`matched_hidden`), or the arm's own default
    (mlp: the LLM's width, as LLaVA-1.5; mlp_wide: the visual vocabulary size)."""
    if hidden == "matched":
        return matched_hidden(feature_dim, vocab_size, n_indicators, llm_dim)
    if hidden is None:
        return llm_dim if connector == "mlp" else vocab_size
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"connector_hidden must be a positive width, 'matched' or null, got {hidden!r}")
    return hidden


class ProjectorVisualTokenizer(VisualFeatures):
    """ViT backbone + an MLP projector (`head`) straight to the LLM's width: no visual vocabulary, no tokens.

    `vocab_size` is the visual table's size: the indicator rows only (`IndicatorEmbedding`).
    """

    projects = True  # the head gives embeddings (OvisModel skips tokenize and the table for image tokens)
    has_visual_vocabulary = False  # training/vocab_diagnostics.py skips it (its 5-row table holds indicators only)
    tokenize_function = "projection"  # no visual tokens (TauAnnealing and the fused softmax path leave it alone)

    def __init__(self, backbone: nn.Module, llm_dim: int, hidden: int, n_indicators: int = 5, hidden_stride: int = 2):
        super().__init__(backbone, n_indicators, n_indicators, hidden_stride)
        self.head = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.GELU(), nn.Linear(hidden, llm_dim))

    def embeddings(self, pixel_values, grid_thws=None):
        """Merged patch features -> LLM-space embeddings [N, T, d] (before the LLM's embedding scale)."""
        return self.head(self.features(pixel_values, grid_thws))

    def forward(self, pixel_values, grid_thws=None):
        return self.embeddings(pixel_values, grid_thws)


class IndicatorEmbedding(nn.Embedding):
    """The MLP arms' visual table: the indicator tokens' rows only (N(0, 1), as the Ovis table's)."""

    def __init__(self, n_indicators: int, embed_dim: int, **factory):
        super().__init__(n_indicators, embed_dim, **factory)

    reinit_like = VisualEmbedding.reinit_like  # vte_init / vte_re_init "text_stats" draw these rows the same way
