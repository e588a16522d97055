"""Per-sequence log-probabilities of the labelled tokens: what preference training (DPO) compares.

The same masks as the training loss: a token counts where the processor labelled it (assistant turns; visual and
indicator positions never, see `OvisModel.merge`), predicted from the position before it. As in `sparse_loss`,
logits are computed only at those positions when the LLM's logits are exactly lm_head(hidden); other LLM families
go through their own forward. Summing per sequence instead of averaging over the batch is the only difference
from the SFT loss: for one sequence, -sum / count is the SFT loss (tested).

The batch runs padded (no packing): the two answers of a preference pair share their prompt, so their lengths are
close and padding wastes little.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import IGNORE_ID
from .sparse_loss import has_sparse_logits, output_logits


def sequence_logps(
    llm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the labelled tokens' log-probs [B] in float32, labelled tokens [B]) of a merged batch."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_ID)  # the next-token target of each position
    supervised = targets != IGNORE_ID
    if has_sparse_logits(llm):
        hidden = llm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   use_cache=False).last_hidden_state
        logits = output_logits(llm, hidden[supervised])
    else:
        logits = llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False).logits[supervised]
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[supervised].unsqueeze(-1)).squeeze(-1)
    rows = supervised.nonzero(as_tuple=True)[0]
    sums = token_logps.new_zeros(labels.shape[0]).index_add(0, rows, token_logps)
    return sums, supervised.sum(dim=1)


def batch_sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps` of an OvisModel on a collated batch (images merged in)."""
    merged = model.merge(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"],
                         batch.get("grid_thws"))
    return sequence_logps(model.llm, merged.inputs_embeds, merged.attention_mask, merged.labels)
