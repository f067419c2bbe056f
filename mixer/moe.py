"""`MoEMLP`: a mixture-of-experts MLP with top-k routing and a load-balancing loss."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MoEMLP(nn.Module):
    """Mixture-of-experts MLP over the last axis: (..., dim) -> (..., dim).

    A linear router scores `num_experts` experts per token; each token goes to its `top_k` best, weighted by
    their softmax probabilities renormalised over the k (Mixtral, Jiang et al., arXiv 2401.04088; Jamba,
    Lieber et al., arXiv 2403.19887, uses 16 experts, top-2), or for top_k=1 by its probability as it is
    (Switch), so that the task loss trains the router either way. Experts are MLPs dim -> hidden -> dim with GELU,
    their weights stacked so that all experts run as one batched matmul over a (experts, capacity, dim)
    dispatch buffer: no Python loop over experts.

    capacity_factor: in training, each expert takes at most ceil(capacity_factor * tokens * top_k /
    num_experts) tokens, first choices before second ones, and drops the rest (their residual carries
    them), which bounds the buffer (Switch Transformer, Fedus et al., arXiv 2101.03961). None, and always in
    eval mode: no token is dropped (the buffer holds the busiest expert's count), so a token's output never
    depends on the other tokens of its batch.

    After each forward `aux_loss` holds the load-balancing loss num_experts * sum_e f_e P_e (f_e: the
    fraction of routed assignments that chose e, P_e: the mean router probability of e; 1 when balanced);
    `moe_aux_loss` gathers it over a model for the training loss.
    """

    def __init__(self, dim: int, num_experts: int = 16, top_k: int = 2, hidden: int | None = None,
                 capacity_factor: float | None = None):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts: expected at least 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k: expected 1 <= top_k <= num_experts={num_experts}, got {top_k}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor: expected a positive number or None, got {capacity_factor}")
        hidden = 4 * dim if hidden is None else hidden
        self.dim, self.num_experts, self.top_k, self.capacity_factor = dim, num_experts, top_k, capacity_factor
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(num_experts, 1, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(num_experts, 1, dim))
        for w, fan_in in ((self.w1, dim), (self.w2, hidden)):  # nn.Linear's default, per expert
            nn.init.uniform_(w, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self.aux_loss = torch.zeros(())

    def route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (T, dim) -> router probabilities (T, E), chosen experts (T, k) and their weights (T, k)."""
        logits = self.router(tokens)
        probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)  # float32 at least
        weights, experts = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            weights = weights / weights.sum(-1, keepdim=True)
        return probs, experts, weights

    def queue(self, expert: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """expert (A,) -> each assignment's place in its expert's queue, in the order given (A,), and the
        count per expert (E,). A stable sort by expert, not a cumulative sum over a one-hot (A, E) matrix: on
        CUDA that scan runs along A with one thread per expert (hybrid vim2_tiny inferred 4.5x slower with it)."""
        counts = torch.zeros(self.num_experts, dtype=torch.long, device=expert.device)
        counts.index_add_(0, expert, torch.ones_like(expert))
        order = torch.sort(expert, stable=True).indices
        starts = counts.cumsum(0) - counts
        slot = torch.empty_like(expert)
        slot[order] = torch.arange(len(expert), device=expert.device) - starts[expert[order]]
        return slot, counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape (..., dim={self.dim}), got {tuple(x.shape)}")
        tokens = x.reshape(-1, self.dim)
        probs, experts, weights = self.route(tokens)
        # Assignments ordered by choice rank, then token: first choices take an expert's capacity first.
        expert = experts.t().reshape(-1)
        token = torch.arange(len(tokens), device=x.device).repeat(self.top_k)
        weight = weights.t().reshape(-1)
        slot, counts = self.queue(expert)
        self.aux_loss = self.num_experts * (counts.float() / len(expert) * probs.mean(0)).sum()
        if self.training and self.capacity_factor is not None:
            capacity = math.ceil(self.capacity_factor * len(expert) / self.num_experts)
        else:
            capacity = int(counts.max()) if len(expert) else 0
        keep = slot < capacity
        expert, token, weight, slot = expert[keep], token[keep], weight[keep], slot[keep]
        buffer = tokens.new_zeros(self.num_experts, capacity, self.dim)
        buffer[expert, slot] = tokens[token]
        hidden = F.gelu(torch.baddbmm(self.b1, buffer, self.w1))
        out = torch.baddbmm(self.b2, hidden, self.w2)  # (experts, capacity, dim), autocast's dtype if on
        y = out.new_zeros(len(tokens), self.dim).index_add_(0, token, out[expert, slot] * weight[:, None].to(out.dtype))
        return y.reshape(*x.shape[:-1], self.dim)


def moe_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """The sum of every `MoEMLP`'s load-balancing loss from the last forward of `model`; None without any."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MoEMLP)]
    return torch.stack(losses).sum() if losses else None
