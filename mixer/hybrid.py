"""`Hybrid`: Jamba's layer pattern over MambaMixer blocks: attention token mixers and mixture-of-experts MLPs
interleaved with the selective mixers."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .attention import AttentionMixer
from .moe import MoEMLP


@dataclass
class Hybrid:
    """Which blocks of a stack (numbered 0, 1, ... across the whole model) take an attention token mixer in
    place of the selective one, and which add a mixture-of-experts MLP after their channel mixer.

    Block i is attention when i % attn_every == attn_offset, and has the MoE MLP when i % moe_every ==
    moe_offset: Jamba (Lieber et al., arXiv 2403.19887) uses attn_every=8, attn_offset=4, moe_every=2,
    moe_offset=1, 16 experts, top-2. attn_every=0 or moe_every=0 turns that part off.
    Attention: `num_heads` query heads, `num_kv_heads` key/value heads (None: as many), rotary positions
    when `rope`. MoE: `num_experts` MLPs of `mlp_ratio` * dim hidden features, `top_k` per token,
    `capacity_factor` as `MoEMLP` takes it.
    """

    attn_every: int = 8
    attn_offset: int = 4
    moe_every: int = 2
    moe_offset: int = 1
    num_heads: int = 4
    num_kv_heads: int | None = None
    rope: bool = True
    num_experts: int = 16
    top_k: int = 2
    mlp_ratio: float = 2.0
    capacity_factor: float | None = None

    def __post_init__(self):
        for every, offset in (("attn_every", "attn_offset"), ("moe_every", "moe_offset")):
            period, place = getattr(self, every), getattr(self, offset)
            if period < 0:
                raise ValueError(f"hybrid.{every}: expected 0 (off) or a positive period, got {period}")
            if period and not 0 <= place < period:
                raise ValueError(f"hybrid.{offset}: expected 0 <= {offset} < {every}={period}, got {place}")

    def is_attention(self, index: int) -> bool:
        return self.attn_every > 0 and index % self.attn_every == self.attn_offset

    def has_moe(self, index: int) -> bool:
        return self.moe_every > 0 and index % self.moe_every == self.moe_offset

    def check_depth(self, depth: int) -> None:
        """A pattern that places neither layer in `depth` blocks is a configuration mistake: say so."""
        if not any(self.is_attention(i) or self.has_moe(i) for i in range(depth)):
            raise ValueError(f"hybrid: attn_every={self.attn_every} (offset {self.attn_offset}) and moe_every="
                             f"{self.moe_every} (offset {self.moe_offset}) place no attention or MoE layer in "
                             f"{depth} blocks")

    def attention(self, dim: int, causal: bool) -> AttentionMixer:
        return AttentionMixer(dim, num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, causal=causal,
                              rope=self.rope)

    def moe(self, dim: int, index: int) -> MoEMLP | None:
        """Block `index`'s MoE MLP, or None where the pattern places none."""
        if not self.has_moe(index):
            return None
        return MoEMLP(dim, num_experts=self.num_experts, top_k=self.top_k, hidden=int(self.mlp_ratio * dim),
                      capacity_factor=self.capacity_factor)


def as_hybrid(hybrid: Hybrid | dict | None) -> Hybrid | None:
    """A `Hybrid` from a config mapping (or None for a pure MambaMixer stack)."""
    if hybrid is None or isinstance(hybrid, Hybrid):
        return hybrid
    unknown = set(hybrid) - set(Hybrid.__dataclass_fields__)
    if unknown:
        raise ValueError(f"hybrid: unknown keys {sorted(unknown)}; expected some of "
                         f"{sorted(Hybrid.__dataclass_fields__)}")
    return Hybrid(**hybrid)


class Flattened2d(nn.Module):
    """Run a (batch, L, dim) token mixer over the H * W positions of x (batch, H, W, dim), in row-major order."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x.flatten(1, 2)).reshape(x.shape)
