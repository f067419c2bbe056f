"""`MambaMixerBlock` and the `MambaMixer` stack: selective mixers joined by weighted averaging of earlier outputs."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath

from ..kernels import weighted_sum
from .hybrid import Hybrid, as_hybrid
from .mixers import SelectiveChannelMixer, SelectiveTokenMixer


class MambaMixerBlock(nn.Module):
    """Block l (1-based) of a MambaMixer: a token mixer then a channel mixer, each pre-norm with a residual.

    Its inputs are learned combinations of every earlier block's outputs (MambaMixer's weighted averaging,
    after DenseFormer), with yToken_0 = yChannel_0 = the stack's input:
        x_tok = sum_{i<l} alpha_i yToken_i + sum_{i<l} beta_i yChannel_i
        yToken_l = x_tok + TokenMixer(Norm(x_tok))
        x_ch  = sum_{i<=l} theta_i yToken_i + sum_{i<l} gamma_i yChannel_i
        yChannel_l = x_ch + ChannelMixer(Norm(x_ch))
    The weights start as a plain sequential stack (beta_{l-1} = theta_l = 1, the rest 0), as DenseFormer
    starts from the ordinary residual stream, and learn from there. The mixers map (batch, L, dim) to itself.
    Each combination is one `weighted_sum` (`backend` picks its op: on CUDA a Triton kernel that reads each
    earlier output once). `mlp` (a hybrid stack's mixture-of-experts MLP, say) adds one more pre-norm
    residual step to yChannel_l: yChannel_l += MLP(Norm(yChannel_l)).
    """

    def __init__(self, index: int, dim: int, token_mixer: nn.Module, channel_mixer: nn.Module,
                 norm_layer=nn.LayerNorm, drop_path: float = 0.0, backend: str = "auto", mlp: nn.Module | None = None):
        super().__init__()
        if index < 1:
            raise ValueError(f"index: blocks are numbered from 1, got {index}")
        self.index, self.backend = index, backend
        self.token_norm, self.token_mixer = norm_layer(dim), token_mixer
        self.channel_norm, self.channel_mixer = norm_layer(dim), channel_mixer
        self.mlp_norm, self.mlp = (norm_layer(dim), mlp) if mlp is not None else (None, None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.alpha = nn.Parameter(torch.zeros(index))
        self.beta = nn.Parameter(torch.zeros(index))
        self.theta = nn.Parameter(torch.zeros(index + 1))
        self.gamma = nn.Parameter(torch.zeros(index))
        with torch.no_grad():
            self.beta[index - 1] = 1.0
            self.theta[index] = 1.0
        for p in (self.alpha, self.beta, self.theta, self.gamma):
            p._no_weight_decay = True

    def forward(self, tokens: list[torch.Tensor], channels: list[torch.Tensor],
                token_state=None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens, channels: yToken_0..yToken_{l-1} and yChannel_0..yChannel_{l-1}, each (batch, L, dim).

        Returns (yToken_l, yChannel_l). `token_state`, if given, is the token mixer's streaming state.
        """
        if len(tokens) != self.index or len(channels) != self.index:
            raise ValueError(f"tokens, channels: block {self.index} needs {self.index} earlier outputs of each, "
                             f"got {len(tokens)} and {len(channels)}")
        x = weighted_sum(torch.cat([self.alpha, self.beta]), [*tokens, *channels], self.backend)
        stream = {} if token_state is None else {"state": token_state}
        y_token = x + self.drop_path(self.token_mixer(self.token_norm(x), **stream))
        x = weighted_sum(torch.cat([self.theta, self.gamma]), [*tokens, y_token, *channels], self.backend)
        y_channel = x + self.drop_path(self.channel_mixer(self.channel_norm(x)))
        if self.mlp is not None:
            y_channel = y_channel + self.drop_path(self.mlp(self.mlp_norm(y_channel)))
        return y_token, y_channel


def run_blocks(blocks, x: torch.Tensor, token_states: dict | None = None) -> torch.Tensor:
    """Feed x through MambaMixerBlocks 1..n, each seeing every earlier output; the last channel-mixer output.

    `token_states`, if given, maps a block's position in `blocks` to its token mixer's streaming state.
    """
    tokens, channels = [x], [x]
    for index, block in enumerate(blocks):
        y_token, y_channel = block(tokens, channels, token_state=(token_states or {}).get(index))
        tokens.append(y_token)
        channels.append(y_channel)
    return channels[-1]


class MambaMixer(nn.Module):
    """A stack of `depth` MambaMixerBlocks over sequences: (batch, num_tokens, dim) -> (batch, num_tokens, dim).

    Owns the history of every block's outputs and feeds it to the next block's weighted averaging; returns
    the last block's channel-mixer output. `token_mixer` / `channel_mixer` are keyword arguments for
    `SelectiveTokenMixer` / `SelectiveChannelMixer`; `drop_path` rises linearly from 0 to its value.
    `hybrid` (a `Hybrid` or its config mapping): attention token mixers and mixture-of-experts MLPs in the
    blocks its pattern names (attention causal unless the token mixer is bidirectional or not causal).
    """

    def __init__(self, dim: int, num_tokens: int, depth: int, token_mixer: dict | None = None,
                 channel_mixer: dict | None = None, norm_layer=nn.LayerNorm, drop_path: float = 0.0,
                 hybrid: Hybrid | dict | None = None):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: expected at least 1 block, got {depth}")
        token_mixer, hybrid = token_mixer or {}, as_hybrid(hybrid)
        if hybrid is not None:
            hybrid.check_depth(depth)
        causal = token_mixer.get("causal", True) and not token_mixer.get("bidirectional", False)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            MambaMixerBlock(
                index + 1, dim,
                hybrid.attention(dim, causal) if hybrid and hybrid.is_attention(index)
                else SelectiveTokenMixer(dim, **token_mixer),
                SelectiveChannelMixer(num_tokens, **(channel_mixer or {})),
                norm_layer=norm_layer, drop_path=rates[index], backend=token_mixer.get("backend", "auto"),
                mlp=hybrid.moe(dim, index) if hybrid else None,
            )
            for index in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, x)
