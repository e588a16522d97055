"""The DPO loss on sequence log-probs, and the rewards it logs.

trl 1.16 computes its DPO losses inline in `DPOTrainer._compute_loss` (a method that runs the model itself); there is
no loss function to call with our own log-probs. So the same formulas are written here, for the loss types whose
inputs we have (sequence log-probs of the policy and the reference, and the answers' token counts), and
tests/test_dpo.py holds them equal to trl's own code on hand-made log-probs:

- `sigmoid` (DPO, Rafailov et al. 2023): -log sigmoid(beta * delta)
- `robust` (label smoothing eps, Chowdhury et al. 2024): ((1 - eps) * -log sigmoid(beta * delta)
  - eps * -log sigmoid(-beta * delta)) / (1 - 2 eps)
- `hinge` (SLiC): relu(1 - beta * delta)
- `ipo` (Azar et al. 2023, per-token averaged as trl does): (delta_avg - 1 / (2 beta))^2

where delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected), the sequence log-probs summed over
each answer's tokens. Rewards are beta x the log-ratios (what trl logs as rewards/chosen, rewards/rejected).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo")


@dataclass
class DPOTerms:
    losses: torch.Tensor  # [P] per pair
    chosen_rewards: torch.Tensor  # [P] beta * (policy - reference) log-prob of the chosen answer, detached
    rejected_rewards: torch.Tensor  # [P]

    @property
    def loss(self) -> torch.Tensor:
        return self.losses.mean()

    def metrics(self, prefix: str) -> dict[str, torch.Tensor]:
        """loss, rewards, margin and accuracy (the share of pairs whose chosen reward is above the rejected one)."""
        margins = self.chosen_rewards - self.rejected_rewards
        return {f"{prefix}/loss": self.loss.detach(),
                f"{prefix}/rewards_chosen": self.chosen_rewards.mean(),
                f"{prefix}/rewards_rejected": self.rejected_rewards.mean(),
                f"{prefix}/rewards_margin": margins.mean(),
                f"{prefix}/rewards_accuracy": (margins > 0).float().mean()}


def check_loss_type(loss_type: str, beta: float, label_smoothing: float = 0.0) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"dpo.loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"dpo.beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo.label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "robust":
        raise ValueError(f"dpo.label_smoothing is used by loss_type=robust only (loss_type is {loss_type!r})")


def dpo_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
    beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None, rejected_tokens: torch.Tensor | None = None,
) -> DPOTerms:
    """Per-pair DPO losses from sequence log-probs [P] (sums over each answer's tokens). `ipo` also needs the
    answers' token counts (`chosen_tokens`, `rejected_tokens`)."""
    check_loss_type(loss_type, beta, label_smoothing)
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * delta)
    elif loss_type == "robust":
        eps = label_smoothing
        losses = (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    else:  # ipo: the log-ratios averaged per answer token, so that beta does not depend on answer length
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("loss_type=ipo needs the answers' token counts")
        average = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (average - 1 / (2 * beta)) ** 2
    return DPOTerms(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())
