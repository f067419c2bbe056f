"""TSM2, the MambaMixer paper's forecaster (Behrouz, Santacatterina, Zabih, arXiv 2403.19888)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ...mixer import AlongAxis, Hybrid, MambaMixerBlock, SelectiveSSM
from ...mixer.block import run_blocks
from ...mixer.hybrid import as_hybrid


class VariateFeatureNorm(nn.Module):
    """2-D normalisation of x (batch, variates, patches, dim): each patch normalised jointly over its
    variates and features, with a per-feature affine (so any number of variates works)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(1, 3), keepdim=True, correction=0)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class TSM2(nn.Module):
    """TSM2: (batch, seq_len, n_vars) [+ covariates (batch, seq_len, n_covariates)] -> (batch, pred_len, n_vars).

    As the paper defines it: every variate is cut into patches separately (patch_len, stride; the last patch
    ends at the last observation) and embedded by one shared linear map, giving (batch, variates, patches,
    d_model); `depth` MambaMixer blocks follow, whose token mixer is a unidirectional S6 along time (causal
    conv1d) and whose channel mixer a bidirectional S6 across variates, joined by the paper's weighted
    averaging of all earlier outputs; a linear head maps each variate's flattened patch features to the
    horizon. With covariates (the calendar features of the window), an extra MambaMixer block encodes them
    and its output joins the target variates along the variate axis, so every variate mixer can select from
    them; the head reads the target variates only.

    Choices where the paper is open, made so that the model is causal in time and can stream exactly:
    - Normalisation of the input (RevIN-style, per variate, learnable affine): with revin_stats="causal"
      each patch is normalised by the mean and standard deviation of the window up to that patch's end;
      forecasts are de-normalised with the statistics of the whole window, as RevIN does. "window": every
      patch by the whole window's statistics, as RevIN (Kim et al., ICLR 2022); the model then cannot stream.
    - "2-D normalisation": `VariateFeatureNorm`, over variates and features at each patch; statistics over
      time as well would let early patches see later ones and rule out the exact streaming mode.
    - No positional embedding: the time mixer's recurrence orders the patches.
    `stream(batch)` returns a `TSM2Stream` fed one observation at a time whose forecast equals this forward.

    hybrid (a `mambamixer.mixer.Hybrid` or its config mapping): Jamba-style blocks, counted 0..depth-1 —
    causal attention along time (with a KV cache when streaming) in place of the time mixer, and a
    mixture-of-experts MLP after the variate mixer, where its pattern says. The covariate block stays pure.
    """

    def __init__(self, seq_len: int, pred_len: int, n_vars: int, n_covariates: int = 0, patch_len: int = 16,
                 stride: int = 8, d_model: int = 64, depth: int = 2, d_state: int = 16, d_conv: int = 4,
                 expand: float = 2, ssm: str = "s6", dropout: float = 0.1, drop_path: float = 0.0,
                 revin: bool = True, revin_stats: str = "causal", eps: float = 1e-5,
                 hybrid: Hybrid | dict | None = None):
        super().__init__()
        for name, value in (("seq_len", seq_len), ("pred_len", pred_len), ("n_vars", n_vars),
                            ("patch_len", patch_len), ("stride", stride)):
            if value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value}")
        if revin_stats not in ("causal", "window"):
            raise ValueError(f"revin_stats: expected 'causal' or 'window', got {revin_stats!r}")
        if patch_len > seq_len:
            raise ValueError(f"patch_len: expected at most seq_len={seq_len}, got {patch_len}")
        self.seq_len, self.pred_len, self.n_vars, self.n_covariates = seq_len, pred_len, n_vars, n_covariates
        self.patch_len, self.stride, self.revin, self.eps = patch_len, stride, revin, eps
        self.revin_stats = revin_stats
        self.num_patches = (seq_len - patch_len) // stride + 1
        self.offset = (seq_len - patch_len) % stride  # observations before the first patch
        ssm_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, ssm=ssm, headdim=min(64, d_model))
        hybrid = as_hybrid(hybrid)
        if hybrid is not None:
            hybrid.check_depth(depth)

        def block(index: int, rate: float, hybrid: Hybrid | None) -> MambaMixerBlock:
            """Block `index` (from 1), with the hybrid pattern's layers at position index - 1."""
            attention = hybrid is not None and hybrid.is_attention(index - 1)
            time_mixer = hybrid.attention(d_model, causal=True) if attention else SelectiveSSM(
                d_model, causal=True, **ssm_kwargs)
            return MambaMixerBlock(
                index, d_model, AlongAxis(time_mixer, axis=2),
                AlongAxis(SelectiveSSM(d_model, bidirectional=True, **ssm_kwargs), axis=1),
                norm_layer=VariateFeatureNorm, drop_path=rate, mlp=hybrid.moe(d_model, index - 1) if hybrid else None,
            )

        self.embed = nn.Linear(patch_len, d_model)
        self.dropout = nn.Dropout(dropout)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(block(i + 1, rates[i], hybrid) for i in range(depth))
        if n_covariates:
            self.covariate_embed = nn.Linear(patch_len, d_model)
            self.covariate_block = block(1, 0.0, None)
        self.head = nn.Linear(self.num_patches * d_model, pred_len)
        if revin:
            self.revin_weight = nn.Parameter(torch.ones(n_vars))
            self.revin_bias = nn.Parameter(torch.zeros(n_vars))

    # -- pieces shared by the full forward and the stream -------------------------------------------------
    def _normalise(self, patches, mean, std):
        """patches (B, M, P, patch_len) with per-patch statistics mean, std (B, M, P)."""
        if not self.revin:
            return patches
        scaled = (patches - mean[..., None]) / std[..., None]
        return scaled * self.revin_weight[:, None, None] + self.revin_bias[:, None, None]

    def _denormalise(self, y, mean, std):
        """y (B, M, pred_len) with whole-window statistics mean, std (B, M)."""
        if not self.revin:
            return y
        y = (y - self.revin_bias[:, None]) / (self.revin_weight[:, None] + self.eps**2)
        return y * std[..., None] + mean[..., None]

    def _mix(self, h, covariate_patches, states=None):
        """h (B, M, P, D) embedded targets, covariate_patches (B, K, P, patch_len) or None -> (B, M, P, D)."""
        states = states or {}
        if covariate_patches is not None:
            c = self.dropout(self.covariate_embed(covariate_patches))
            c = self.covariate_block([c], [c], token_state=states.get("covariates"))[1]
            h = torch.cat([h, c], dim=1)
        return run_blocks(self.blocks, h, states)[:, : self.n_vars]

    def _head(self, features):
        """features (B, M, P, D) -> (B, M, pred_len)."""
        return self.head(self.dropout(features.flatten(2)))

    def _check(self, x, covariates):
        if x.dim() != 3 or x.shape[1:] != (self.seq_len, self.n_vars):
            raise ValueError(f"x: expected shape (batch, seq_len={self.seq_len}, n_vars={self.n_vars}), "
                             f"got {tuple(x.shape)}")
        if (covariates is None) != (self.n_covariates == 0):
            raise ValueError(f"covariates: this model was built with n_covariates={self.n_covariates}; "
                             f"pass {'none' if self.n_covariates == 0 else 'them'}")
        if covariates is not None and covariates.shape != (x.shape[0], self.seq_len, self.n_covariates):
            raise ValueError(f"covariates: expected shape (batch, seq_len={self.seq_len}, "
                             f"n_covariates={self.n_covariates}), got {tuple(covariates.shape)}")

    def _patches(self, series):
        """series (B, C, seq_len) -> (B, C, P, patch_len), the last patch ending at the last step."""
        return series[..., self.offset:].unfold(-1, self.patch_len, self.stride)

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, covariates)
        series = x.transpose(1, 2)  # (B, M, L)
        # Mean and std of the window up to each patch's end (running sums, so causal in time).
        ends = torch.arange(self.num_patches, device=x.device) * self.stride + self.offset + self.patch_len
        count = ends.to(series.dtype)
        mean = series.cumsum(-1)[..., ends - 1] / count
        var = (series.square().cumsum(-1)[..., ends - 1] / count - mean.square()).clamp_min(0)
        std = torch.sqrt(var + self.eps)
        if self.revin_stats == "window":  # the statistics at the last patch's end are the whole window's
            mean, std = mean[..., -1:].expand_as(mean), std[..., -1:].expand_as(std)
        h = self.dropout(self.embed(self._normalise(self._patches(series), mean, std)))
        cov = None if covariates is None else self._patches(covariates.transpose(1, 2))
        y = self._head(self._mix(h, cov))
        return self._denormalise(y, mean[..., -1], std[..., -1]).transpose(1, 2)

    def stream(self, batch: int) -> TSM2Stream:
        return TSM2Stream(self, batch)


class TSM2Stream:
    """Streaming TSM2 over one window: `update` takes one observation at a time, each completed patch goes
    through every block once from the carried SSM states (and KV caches of attention blocks), and `forecast`
    is ready after `seq_len` observations. Equal to `TSM2.forward` on the same window (in eval mode), at O(1)
    work per observation (O(patches so far) in an attention block).
    """

    def __init__(self, model: TSM2, batch: int):
        if model.revin and model.revin_stats != "causal":
            raise ValueError(f"revin_stats: streaming needs 'causal' statistics (each patch normalised by the "
                             f"window up to its end), this model has {model.revin_stats!r}")
        self.model, self.batch, self.count = model, batch, 0
        device = model.embed.weight.device
        m, k = model.n_vars, model.n_covariates
        self.recent = torch.zeros(batch, m, model.patch_len, device=device)
        self.recent_covariates = torch.zeros(batch, k, model.patch_len, device=device)
        self.sums = torch.zeros(2, batch, m, device=device)
        self.states = {i: block.token_mixer.layer.allocate_state(batch * (m + k), device)
                       for i, block in enumerate(model.blocks)}
        if k:
            self.states["covariates"] = model.covariate_block.token_mixer.layer.allocate_state(batch * k, device)
        self.features: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> None:
        """x: (batch, n_vars), the next observation; covariates: (batch, n_covariates) if the model has them."""
        model = self.model
        if self.count == model.seq_len:
            raise ValueError(f"x: the stream already holds a full window of {model.seq_len} steps; "
                             "call forecast(), or start a new stream")
        if x.shape != (self.batch, model.n_vars):
            raise ValueError(f"x: expected shape (batch={self.batch}, n_vars={model.n_vars}), got {tuple(x.shape)}")
        want = (self.batch, model.n_covariates) if model.n_covariates else None
        if (None if covariates is None else tuple(covariates.shape)) != want:
            raise ValueError(f"covariates: expected {'shape ' + str(want) if want else 'none'} (the model has "
                             f"n_covariates={model.n_covariates}), got "
                             f"{None if covariates is None else tuple(covariates.shape)}")
        self.recent = torch.cat([self.recent[..., 1:], x[..., None]], dim=-1)
        if model.n_covariates:
            self.recent_covariates = torch.cat([self.recent_covariates[..., 1:], covariates[..., None]], dim=-1)
        self.sums += torch.stack([x, x.square()])
        self.count += 1
        since_first = self.count - model.offset - model.patch_len
        if since_first >= 0 and since_first % model.stride == 0:
            mean = self.sums[0] / self.count
            std = torch.sqrt((self.sums[1] / self.count - mean.square()).clamp_min(0) + model.eps)
            h = model.embed(model._normalise(self.recent[:, :, None], mean[..., None], std[..., None]))
            cov = self.recent_covariates[:, :, None] if model.n_covariates else None
            self.features.append(model._mix(h, cov, self.states))

    @torch.no_grad()
    def forecast(self) -> torch.Tensor:
        """(batch, pred_len, n_vars), once a whole window has been fed."""
        model = self.model
        if self.count < model.seq_len:
            raise ValueError(f"forecast: needs {model.seq_len} observations, got {self.count}")
        mean = self.sums[0] / self.count
        std = torch.sqrt((self.sums[1] / self.count - mean.square()).clamp_min(0) + model.eps)
        y = model._head(torch.cat(self.features, dim=2))
        return model._denormalise(y, mean, std).transpose(1, 2)
