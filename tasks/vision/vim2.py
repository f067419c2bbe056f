"""ViM2, the MambaMixer paper's image classifier (Behrouz, Santacatterina, Zabih, arXiv 2403.19888), as timm models.

    import mambamixer, timm
    model = timm.create_model("vim2_tiny", num_classes=10)
    backbone = timm.create_model("vim2_tiny", features_only=True)   # 4 NCHW maps, strides 4, 8, 16, 32
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ...mixer import ChannelWiseSelectiveMixer, CrossScanSSM, Hybrid, MambaMixerBlock
from ...mixer.block import run_blocks
from ...mixer.hybrid import Flattened2d, as_hybrid


class Stem(nn.Module):
    """(batch, in_chans, H, W) -> (batch, H/4, W/4, dim): a 4x4 stride-4 conv and LayerNorm."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(in_chans, dim, 4, stride=4), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class Downsample(nn.Module):
    """(batch, H, W, dim) -> (batch, H/2, W/2, out_dim): LayerNorm and a 2x2 stride-2 conv."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm, self.conv = nn.LayerNorm(dim), nn.Conv2d(dim, out_dim, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ViM2Stage(nn.Module):
    """Optional downsampling, then MambaMixer blocks with weighted averaging of the stage's earlier outputs.

    (batch, H, W, in_dim) -> (batch, H', W', dim). Token mixer: `CrossScanSSM`; channel mixer:
    `ChannelWiseSelectiveMixer`; the averaging starts afresh in every stage, as in the paper. With `hybrid`,
    the blocks the pattern names (counted from `first`, the stage's first block in the whole model) attend
    over all H * W tokens instead, and add a mixture-of-experts MLP.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, downsample: bool, drop_path: list[float],
                 token_mixer: dict, channel_mixer: dict, hybrid: Hybrid | None = None, first: int = 0):
        super().__init__()
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()

        def mixer(index: int) -> nn.Module:
            if hybrid is not None and hybrid.is_attention(index):
                return Flattened2d(hybrid.attention(dim, causal=False))
            return CrossScanSSM(dim, **token_mixer)

        self.blocks = nn.ModuleList(
            MambaMixerBlock(i + 1, dim, mixer(first + i), ChannelWiseSelectiveMixer(dim, **channel_mixer),
                            drop_path=drop_path[i], backend=token_mixer.get("backend", "auto"),
                            mlp=hybrid.moe(dim, first + i) if hybrid else None)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, self.downsample(x))


class ViM2(nn.Module):
    """ViM2: (batch, in_chans, H, W) -> (batch, num_classes); H and W any multiples of 32.

    A 4x4 stride-4 stem keeps the tokens on their 2-D grid; four stages of `depths` MambaMixer blocks at
    `dims` channels, each stage after the first starting with a 2x downsampling; LayerNorm, global average
    pooling and a linear head. Token mixer: cross-scan selective SSM (4 scan orders, depthwise 3x3 conv,
    S6 at expand * dim); channel mixer: the bidirectional channel-wise selective mixer at channel_expand
    features per channel. No parameter depends on the image size.

    ssm: "s6" or "ssd" for both mixers; backend: the scan ops' backend ("auto": Triton on CUDA).
    hybrid (a `mambamixer.mixer.Hybrid` or its config mapping): Jamba-style attention and mixture-of-experts
    layers in the blocks its pattern names, counted 0.. across all stages.
    forward_features -> (batch, H/32, W/32, dims[-1]) after the final norm; forward_head -> logits.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, dims: tuple[int, ...] = (96, 192, 384, 768),
                 depths: tuple[int, ...] = (2, 2, 6, 2), d_state: int = 16, expand: float = 2, d_conv: int = 3,
                 channel_expand: int = 2, ssm: str = "s6", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "avg", backend: str = "auto", hybrid: Hybrid | dict | None = None):
        super().__init__()
        if len(dims) != len(depths) or not dims:
            raise ValueError(f"dims, depths: expected one dim per stage, got {dims} and {depths}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool: expected 'avg' or '' (no pooling), got {global_pool!r}")
        self.num_classes, self.global_pool, self.drop_rate = num_classes, global_pool, drop_rate
        self.num_features = self.head_hidden_size = dims[-1]
        self.reduction = 4 * 2 ** (len(dims) - 1)
        self.stem = Stem(in_chans, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))
        token_mixer = dict(d_state=d_state, expand=expand, d_conv=d_conv, ssm=ssm, backend=backend)
        channel_mixer = dict(expand=channel_expand, d_state=d_state, ssm=ssm, backend=backend)
        hybrid = as_hybrid(hybrid)
        if hybrid is not None:
            hybrid.check_depth(sum(depths))
        self.stages = nn.ModuleList(
            ViM2Stage(dims[max(i - 1, 0)], dims[i], depths[i], i > 0, rates[i].tolist(), token_mixer, channel_mixer,
                      hybrid, sum(depths[:i]))
            for i in range(len(dims))
        )
        self.feature_info = [dict(num_chs=d, reduction=4 * 2**i, module=f"stages.{i}") for i, d in enumerate(dims)]
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def no_weight_decay(self) -> set[str]:
        """The SSMs' A_log, D and dt biases and the averaging weights (timm's optimizer factory reads this)."""
        return {name for name, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool: expected 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.stem.conv.in_channels:
            raise ValueError(f"x: expected shape (batch, in_chans={self.stem.conv.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        if x.shape[2] % self.reduction or x.shape[3] % self.reduction:
            raise ValueError(f"x: expected height and width divisible by {self.reduction}, got {tuple(x.shape[2:])}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Every selected stage's output as (batch, C, H, W) (timm's feature API; `features_only=True` uses it).

        Returns the list of maps, or (final features, maps) unless `intermediates_only`.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt: expected 'NCHW' or 'NHWC', got {output_fmt!r}")
        self._check_input(x)
        take, max_index = feature_take_indices(len(self.stages), indices)
        x = self.stem(x)
        maps = []
        for i, stage in enumerate(self.stages[: max_index + 1] if stop_early else self.stages):
            x = stage(x)
            if i in take:
                y = self.norm(x) if norm and i == len(self.stages) - 1 else x
                maps.append(y.permute(0, 3, 1, 2) if output_fmt == "NCHW" else y)
        if intermediates_only:
            return maps
        return self.norm(x), maps


def _cfg(**kwargs) -> dict:
    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.9,
            "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "stem.conv", "classifier": "head", "paper_ids": "arXiv:2403.19888", **kwargs}


default_cfgs = generate_default_cfgs({"vim2_tiny": _cfg(), "vim2_small": _cfg(), "vim2_base": _cfg()})


def _create(variant: str, pretrained: bool, **kwargs) -> ViM2:
    if pretrained:
        raise ValueError(f"pretrained: no pretrained weights are published for {variant}")
    out_indices, stages = kwargs.get("out_indices"), len(kwargs["depths"])
    if out_indices is not None:
        valid = (1 <= out_indices <= stages if isinstance(out_indices, int) else
                 len(out_indices) > 0 and all(isinstance(i, int) and -stages <= i < stages for i in out_indices))
        if not valid:
            raise ValueError(f"out_indices: expected stage indices in [-{stages}, {stages}) or a count of last stages "
                             f"1..{stages} ({variant} here has {stages} stages), got {out_indices!r}")
    return build_model_with_cfg(ViM2, variant, pretrained,
                                feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)), **kwargs)


# Sizes: dims from the paper's table. Depths: vim2_tiny as stated (2-2-6-2); vim2_small and vim2_base take
# 2-2-27-2 rather than the stated 2-2-18-2, so that they match the paper's parameter counts (43 M, 74 M) within
# 5 %: those counts appear in three tables that agree with each other (ImageNet; UperNet 51 / 75 M; Mask R-CNN
# 39 / 62 M, each a fixed head on the backbone), and they are the counts of VMamba's vanilla models that ViM2 is
# built on (Vanilla-VMamba-S/B: depths 2-2-27-2, 44 M / 76 M); with the stated block, depths 2-2-18-2 give
# 33.7 M / 57.9 M. Drop-path rates as for Swin/VMamba of the same size.
@register_model
def vim2_tiny(pretrained: bool = False, **kwargs) -> ViM2:
    """ViM2-T: dims 96-768, depths 2-2-6-2 (paper: 20 M parameters, 82.7 % ImageNet top-1)."""
    return _create("vim2_tiny", pretrained, **{"dims": (96, 192, 384, 768), "depths": (2, 2, 6, 2),
                                               "drop_path_rate": 0.2, **kwargs})


@register_model
def vim2_small(pretrained: bool = False, **kwargs) -> ViM2:
    """ViM2-S: dims 96-768, depths 2-2-27-2, 44.5 M parameters (paper: 43 M, 83.7 %)."""
    return _create("vim2_small", pretrained, **{"dims": (96, 192, 384, 768), "depths": (2, 2, 27, 2),
                                                "drop_path_rate": 0.3, **kwargs})


@register_model
def vim2_base(pretrained: bool = False, **kwargs) -> ViM2:
    """ViM2-B: dims 128-1024, depths 2-2-27-2, 76.4 M parameters (paper: 74 M, 83.9 %)."""
    return _create("vim2_base", pretrained, **{"dims": (128, 256, 512, 1024), "depths": (2, 2, 27, 2),
                                               "drop_path_rate": 0.5, **kwargs})
