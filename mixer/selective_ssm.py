"""`SelectiveSSM`: the Mamba selective state-space mixer, one or two scan directions."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels import (
    depthwise_conv1d_silu,
    mamba_chunk_scan_combined,
    selective_scan_bidirectional_fn,
    selective_scan_fn,
    selective_state_update,
    ssd_state_update,
)


def _inverse_softplus_dt(size: int, dt_min: float, dt_max: float, dt_init_floor: float) -> torch.Tensor:
    """A bias b with softplus(b) = dt, dt sampled log-uniformly in [dt_min, dt_max] (Mamba's dt init)."""
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def check_ssd_heads(d_inner: int, headdim: int, ngroups: int) -> int:
    """The SSD head size min(headdim, d_inner), checked to split d_inner into heads divisible by ngroups."""
    headdim = min(headdim, d_inner)
    if d_inner % headdim or (d_inner // headdim) % ngroups:
        raise ValueError(f"headdim: must divide d_inner={d_inner} into heads divisible by ngroups={ngroups}, "
                         f"got headdim={headdim}")
    return headdim


class _Direction(nn.Module):
    """What both scan directions share: an optional depthwise conv1d + SiLU before the scan, and its padding.

    d_conv=0: no conv and no SiLU (the caller has already convolved and activated x, as ViM2's 2-D conv does).
    causal: the forward direction's conv sees the past, the reverse direction's the future; otherwise a
    centred window.
    """

    def __init__(self, d_inner: int, *, d_state: int, d_conv: int, causal: bool, reverse: bool, conv_bias: bool,
                 backend: str):
        super().__init__()
        self.d_inner, self.d_state, self.d_conv = d_inner, d_state, d_conv
        self.reverse, self.backend = reverse, backend
        if causal:
            self.padding = (0, d_conv - 1) if reverse else (d_conv - 1, 0)
        else:
            left = (d_conv - 1) // 2
            self.padding = (d_conv - 1 - left, left) if reverse else (left, d_conv - 1 - left)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=conv_bias) if d_conv else None

    def activate(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, d_inner, L) -> SiLU(conv1d(x)) along L, or x itself without a conv; under autocast in the
        autocast dtype, as conv1d would run (`depthwise_conv1d_silu`: shifted multiply-adds)."""
        if self.conv1d is None:
            return x
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return depthwise_conv1d_silu(x, self.conv1d.weight[:, 0], self.conv1d.bias, self.padding)

    def _conv_step(self, x: torch.Tensor, conv_state: torch.Tensor) -> torch.Tensor:
        """One causal conv + SiLU step: x (batch, d_inner) with the window conv_state (batch, d_inner, d_conv - 1),
        which is shifted in place."""
        window = torch.cat([conv_state.to(x.dtype), x[..., None]], dim=-1)  # (batch, d_inner, d_conv)
        conv_state.copy_(window[..., 1:])
        bias = 0 if self.conv1d.bias is None else self.conv1d.bias
        return F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + bias)

    def _no_weight_decay(self, *params: nn.Parameter) -> None:
        for p in params:
            p._no_weight_decay = True  # as in Mamba: the SSM's own parameters are not decayed


class S6Direction(_Direction):
    """One Mamba-1 (S6) scan direction: conv1d -> SiLU -> selective scan, with its own x/dt projections, A
    (d_inner, d_state) and D. x, z: (batch, d_inner, L) -> (batch, d_inner, L), gated by silu(z) in the op.
    Initialisation as Mamba's: S4D-real A[:, n] = -(n + 1), dt log-uniform in [dt_min, dt_max], D = 1."""

    def __init__(self, d_inner: int, *, d_state: int, d_conv: int, dt_rank: int, causal: bool, reverse: bool,
                 conv_bias: bool = True, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 backend: str = "auto"):
        super().__init__(d_inner, d_state=d_state, d_conv=d_conv, causal=causal, reverse=reverse,
                         conv_bias=conv_bias, backend=backend)
        self.dt_rank = dt_rank
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        std = dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(_inverse_softplus_dt(d_inner, dt_min, dt_max, dt_init_floor))
        # Stored with its channels adjacent (strides (1, d_inner)), the layout the Triton kernels read A in;
        # -exp(A_log) keeps it, so no call copies A.
        a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1))
        self.A_log = nn.Parameter(a_log.t().contiguous().t())
        self.D = nn.Parameter(torch.ones(d_inner))
        self._no_weight_decay(self.A_log, self.D, self.dt_proj.bias)

    @property
    def A(self) -> torch.Tensor:
        """(d_inner, d_state) float32, negative, its channels adjacent (as A_log)."""
        return -torch.exp(self.A_log.float())

    def scan_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (batch, d_inner, L) -> the scan's keyword arguments (`scan_args`)."""
        u = self.activate(x)
        return self.scan_args(u, self.x_proj(u.transpose(1, 2)))

    def scan_args(self, u: torch.Tensor, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """u (batch, d_inner, L) and its x-projection params (batch, L, dt_rank + 2N) -> the scan's keyword
        arguments u, delta, A, B, C, D, delta_bias and delta_proj_weight, softplus to be applied. delta is the
        low-rank dt (batch, dt_rank, L) with dt_proj's weight as delta_proj_weight: the op forms the
        (batch, d_inner, L) delta itself and does not keep it for the backward."""
        dt, B, C = params.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return dict(u=u, delta=dt.transpose(1, 2), A=self.A, B=B.transpose(1, 2), C=C.transpose(1, 2),
                    D=self.D.float(), delta_bias=self.dt_proj.bias.float(), delta_proj_weight=self.dt_proj.weight)

    def projected_args(self) -> tuple[torch.Tensor | None, ...]:
        """The direction's weights as `selective_scan_projected_bidirectional_fn` takes them, for d_inner = e
        features and dt_rank 1: (A, x_weight, dt_weight, dt_bias, D, conv_weight, conv_bias)."""
        conv = (None, None) if self.conv1d is None else (self.conv1d.weight[:, 0], self.conv1d.bias)
        return (self.A, self.x_proj.weight, self.dt_proj.weight[:, 0], self.dt_proj.bias.float(), self.D.float(),
                *conv)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return selective_scan_fn(**self.scan_inputs(x), z=z, delta_softplus=True, reverse=self.reverse,
                                 backend=self.backend)

    def allocate_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (conv window (batch, d_inner, d_conv - 1), SSM state (batch, d_inner, d_state)), float32."""
        return (torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device),
                torch.zeros(batch, self.d_inner, self.d_state, device=device))

    def step(self, x: torch.Tensor, z: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One causal step: x, z (batch, d_inner) -> (batch, d_inner); `state` is updated in place."""
        conv_state, ssm_state = state
        x = self._conv_step(x, conv_state)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return selective_state_update(ssm_state, x, F.linear(dt, self.dt_proj.weight), self.A, B, C, self.D.float(),
                                      z, self.dt_proj.bias.float(), dt_softplus=True)


class SSDDirection(_Direction):
    """One Mamba-2 (SSD) scan direction: conv1d -> SiLU -> the chunked SSD scan over heads of `headdim`
    channels with one scalar A per head (A = -a, a ~ U[1, 16]) and B/C shared by `ngroups` groups.
    x, z: (batch, d_inner, L) -> (batch, d_inner, L), gated by silu(z) in the op."""

    def __init__(self, d_inner: int, *, d_state: int, d_conv: int, headdim: int, ngroups: int, chunk_size: int,
                 causal: bool, reverse: bool, conv_bias: bool = True, dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, backend: str = "auto"):
        super().__init__(d_inner, d_state=d_state, d_conv=d_conv, causal=causal, reverse=reverse,
                         conv_bias=conv_bias, backend=backend)
        self.nheads, self.headdim, self.ngroups, self.chunk_size = d_inner // headdim, headdim, ngroups, chunk_size
        self.x_proj = nn.Linear(d_inner, self.nheads + 2 * ngroups * d_state, bias=False)
        self.dt_bias = nn.Parameter(_inverse_softplus_dt(self.nheads, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self._no_weight_decay(self.A_log, self.D, self.dt_bias)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x-projection params (..., H + 2GN) -> dt (..., H), B and C (..., G, N)."""
        gn = self.ngroups * self.d_state
        dt, B, C = params.split([self.nheads, gn, gn], dim=-1)
        groups = (*params.shape[:-1], self.ngroups, self.d_state)
        return dt, B.reshape(groups), C.reshape(groups)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        x = self.activate(x)
        dt, B, C = self._split(self.x_proj(x.transpose(1, 2)))  # (batch, L, ...)
        heads = (batch, length, self.nheads, self.headdim)
        y = mamba_chunk_scan_combined(
            x.transpose(1, 2).reshape(heads), dt, -torch.exp(self.A_log.float()), B, C, self.chunk_size,
            D=self.D.float(), z=z.transpose(1, 2).reshape(heads), dt_bias=self.dt_bias.float(), dt_softplus=True,
            reverse=self.reverse, backend=self.backend,
        )
        return y.reshape(batch, length, self.d_inner).transpose(1, 2)

    def allocate_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (conv window (batch, d_inner, d_conv - 1), SSM state (batch, H, headdim, d_state)), float32."""
        return (torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device),
                torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device))

    def step(self, x: torch.Tensor, z: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One causal step: x, z (batch, d_inner) -> (batch, d_inner); `state` is updated in place."""
        conv_state, ssm_state = state
        x = self._conv_step(x, conv_state)
        dt, B, C = self._split(self.x_proj(x))
        heads = (x.shape[0], self.nheads, self.headdim)
        y = ssd_state_update(ssm_state, x.reshape(heads), dt, -torch.exp(self.A_log.float()), B, C, self.D.float(),
                             z.reshape(heads), self.dt_bias.float(), dt_softplus=True)
        return y.reshape(x.shape)


def scan_direction(ssm: str, d_inner: int, *, dt_rank: int, headdim: int, ngroups: int, chunk_size: int,
                   **common) -> S6Direction | SSDDirection:
    """An `S6Direction` (ssm="s6", which takes dt_rank) or an `SSDDirection` (ssm="ssd", which takes headdim,
    ngroups and chunk_size); `common`: the keywords both take."""
    if ssm == "s6":
        return S6Direction(d_inner, dt_rank=dt_rank, **common)
    return SSDDirection(d_inner, headdim=headdim, ngroups=ngroups, chunk_size=chunk_size, **common)


class SelectiveSSM(nn.Module):
    """Mamba selective SSM block: (batch, L, d_model) -> (batch, L, d_model).

    in_proj to x and gate z (d_model -> 2 * expand * d_model); per direction a depthwise conv1d, SiLU,
    x_proj to (delta, B, C), delta projection and the selective scan; out_proj(sum of directions * silu(z)).
    Initialisation as in Mamba (Gu & Dao, 2023): S4D-real A, dt log-uniform in [dt_min, dt_max] through an
    inverse-softplus bias, D = 1.

    bidirectional: a second direction scanning last-to-first with its own conv, projections, A and D; the
        two outputs are added and gated by the same z (MambaMixer's bidirectional selective mixer). With
        ssm="s6" both directions run in one fused scan (`selective_scan_bidirectional_fn`: one Triton
        launch on the GPU, no flipped copies).
    causal: each direction's conv sees only its own past; False gives a centred conv window.
    ssm: "s6" (Mamba-1, A of shape (d_inner, d_state)) or "ssd" (Mamba-2 style: scalar A per head of
        `headdim` channels, B/C shared by `ngroups` groups, the chunked SSD op).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 dt_rank: int | str = "auto", bidirectional: bool = False, causal: bool = True, ssm: str = "s6",
                 headdim: int = 64, ngroups: int = 1, chunk_size: int = 64, bias: bool = False,
                 conv_bias: bool = True, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 backend: str = "auto"):
        super().__init__()
        if ssm not in ("s6", "ssd"):
            raise ValueError(f"ssm: expected 's6' or 'ssd', got {ssm!r}")
        d_inner = int(expand * d_model)
        if d_model < 1 or d_inner < 1:
            raise ValueError(f"d_model: expected a positive size (with expand={expand}), got {d_model}")
        if ssm == "ssd":
            headdim = check_ssd_heads(d_inner, headdim, ngroups)
        self.d_model, self.d_inner, self.bidirectional = d_model, d_inner, bidirectional
        dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.ssm = ssm
        self.directions = nn.ModuleList(
            scan_direction(ssm, d_inner, dt_rank=dt_rank, headdim=headdim, ngroups=ngroups, chunk_size=chunk_size,
                           d_state=d_state, d_conv=d_conv, causal=causal, reverse=reverse, conv_bias=conv_bias,
                           dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor, backend=backend)
            for reverse in ((False, True) if bidirectional else (False,))
        )
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        self.causal = causal

    def forward(self, hidden: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """hidden: (batch, L, d_model) -> (batch, L, d_model).

        With `state` (from `allocate_state`), continue a stream: the L new tokens are processed one step at a
        time from the carried conv window and SSM state, which are updated in place. Feeding a sequence in
        pieces this way gives the same outputs as one call on the whole sequence.
        """
        if hidden.dim() != 3 or hidden.shape[-1] != self.d_model:
            raise ValueError(f"hidden: expected shape (batch, L, d_model={self.d_model}), got {tuple(hidden.shape)}")
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # each (batch, d_inner, L)
        if state is None and self.bidirectional and self.ssm == "s6":
            fwd, bwd = (direction.scan_inputs(x) for direction in self.directions)
            y = selective_scan_bidirectional_fn(**{k: (fwd[k], bwd[k]) for k in fwd}, z=z, delta_softplus=True,
                                                backend=self.directions[0].backend)
        elif state is None:
            y = sum(direction(x, z) for direction in self.directions)
        else:
            (direction,) = self.directions
            y = torch.stack([direction.step(x[..., t], z[..., t], state) for t in range(x.shape[-1])], dim=-1)
        return self.out_proj(y.transpose(1, 2))

    def allocate_state(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero streaming state for `batch` sequences; only a unidirectional, causal layer can stream."""
        if self.bidirectional or not self.causal:
            raise ValueError("state: streaming needs a unidirectional layer with a causal conv "
                             f"(bidirectional={self.bidirectional}, causal={self.causal})")
        return self.directions[0].allocate_state(batch, device)
