"""`AttentionMixer`: multi-head attention as a token mixer, with rotary positions, grouped-query heads and a KV
cache for streaming."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al., RoFormer, arXiv 2104.09864) of x (batch, heads, L, head_dim) at
    `positions` (L,): the pair (x_i, x_{i + head_dim/2}) is rotated by positions * base^(-2i/head_dim)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * freqs  # (L, half)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class KVCache:
    """The keys and values a streaming `AttentionMixer` has seen, each (batch, kv_heads, T, head_dim)."""

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new steps' keys and values; returns all of them."""
        if self.keys is not None:
            keys, values = torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values


class AttentionMixer(nn.Module):
    """Multi-head attention over the sequence: (batch, L, dim) -> (batch, L, dim).

    Queries in `num_heads` heads, keys and values in `num_kv_heads` heads each shared by num_heads /
    num_kv_heads query heads (grouped-query attention, Ainslie et al., arXiv 2305.13245), through torch's
    `scaled_dot_product_attention`. causal: each token attends to itself and earlier ones. rope: rotary
    positions on queries and keys (head_dim even); without it the layer is permutation-equivariant, as
    Jamba's attention layers are (its Mamba layers supply the order).

    `allocate_state(batch)` gives a `KVCache`; with `state=` a causal layer continues a stream: the L new
    tokens attend to every cached one and to each other causally, and are appended to the cache, so feeding
    a sequence in pieces gives the outputs of one call on the whole of it.
    """

    def __init__(self, dim: int, num_heads: int = 4, num_kv_heads: int | None = None, causal: bool = True,
                 rope: bool = True, rope_base: float = 10000.0, qkv_bias: bool = False, attn_drop: float = 0.0):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads: expected a positive divisor of dim={dim}, got {num_heads}")
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads: expected a positive divisor of num_heads={num_heads}, got {num_kv_heads}")
        self.head_dim = dim // num_heads
        if rope and self.head_dim % 2:
            raise ValueError(f"rope: needs an even head_dim, got dim={dim} / num_heads={num_heads} = {self.head_dim}")
        self.dim, self.num_heads, self.num_kv_heads = dim, num_heads, num_kv_heads
        self.causal, self.rope, self.rope_base, self.attn_drop = causal, rope, rope_base, attn_drop
        self.qkv = nn.Linear(dim, (num_heads + 2 * num_kv_heads) * self.head_dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, hidden: torch.Tensor, state: KVCache | None = None) -> torch.Tensor:
        if hidden.dim() != 3 or hidden.shape[-1] != self.dim:
            raise ValueError(f"hidden: expected shape (batch, L, dim={self.dim}), got {tuple(hidden.shape)}")
        if state is not None and not self.causal:
            raise ValueError("state: streaming needs a causal layer (causal=False attends to later tokens)")
        batch, length, _ = hidden.shape
        q, k, v = self.qkv(hidden).unflatten(-1, (-1, self.head_dim)).transpose(1, 2).split(
            [self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=1)  # (batch, heads, L, head_dim)
        start = 0 if state is None else state.length
        positions = torch.arange(start, start + length, device=hidden.device)
        if self.rope:
            q, k = rotary(q, positions, self.rope_base), rotary(k, positions, self.rope_base)
        if state is not None:
            k, v = state.extend(k, v)
        mask, causal = None, self.causal
        if causal and start > 0:  # queries at start.. see every cached key and the new ones up to their own
            mask = torch.arange(k.shape[2], device=hidden.device) <= positions[:, None]
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and length > 1,
                                           dropout_p=self.attn_drop if self.training else 0.0,
                                           enable_gqa=self.num_kv_heads != self.num_heads)
        return self.proj(y.transpose(1, 2).reshape(batch, length, self.dim))

    def allocate_state(self, batch: int, device=None) -> KVCache:
        """An empty KV cache (`batch` and `device` are taken from the first tokens fed)."""
        if not self.causal:
            raise ValueError("state: streaming needs a causal layer (causal=False attends to later tokens)")
        return KVCache()
