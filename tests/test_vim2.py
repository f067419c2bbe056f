"""ViM2: its two mixers against plain float64 reference scans, every registered model, timm's API, bad input."""

import contextlib

import pytest
import timm
import torch
import torch.nn.functional as F

import mambamixer  # noqa: F401  (registers the ViM2 models)
from mambamixer.kernels import selective_scan_ref
from mambamixer.mixer import ChannelWiseSelectiveMixer, CrossScanSSM
from mambamixer.tasks.vision.vim2 import ViM2

# Exact parameter counts of our models, and the paper's figures they are compared with.
PARAMS = {"vim2_tiny": (19_346_044, 20e6), "vim2_small": (44_536_153, 43e6), "vim2_base": (76_409_337, 74e6)}


def reference_scan(direction, u, z, reverse):
    """One S6 direction by the float64 recurrence on (batch, d, L) inputs; reverse = flip, scan, flip back."""
    a = direction.scan_inputs(u)
    uu, A, B, C, D, bias = (a[k] for k in ("u", "A", "B", "C", "D", "delta_bias"))
    delta = torch.einsum("dr,brl->bdl", a["delta_proj_weight"], a["delta"])  # from the low-rank dt
    if reverse:
        uu, delta, B, C, z = (t.flip(-1) for t in (uu, delta, B, C, z))
    y = selective_scan_ref(uu, delta, A, B, C, D, z, bias, delta_softplus=True)
    return y.flip(-1) if reverse else y


def test_cross_scan_is_four_scans_over_rows_and_columns():
    torch.manual_seed(0)
    layer = CrossScanSSM(4, d_state=3, backend="torch").double()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    u, z = layer.in_proj(x).permute(0, 3, 1, 2).chunk(2, dim=1)
    u = F.silu(layer.conv2d(u))
    d = layer.directions
    rows = [reference_scan(d[k], u.flatten(2), z.flatten(2), reverse=k == 1) for k in (0, 1)]
    ut, zt = u.transpose(2, 3).flatten(2), z.transpose(2, 3).flatten(2)
    cols = [reference_scan(d[k], ut, zt, reverse=k == 3) for k in (2, 3)]
    y = sum(rows).view(2, -1, 3, 5) + sum(cols).view(2, -1, 5, 3).transpose(2, 3)
    torch.testing.assert_close(layer(x), layer.out_proj(y.permute(0, 2, 3, 1)))


def test_channel_mixer_is_two_scans_along_each_tokens_channels():
    torch.manual_seed(1)
    layer = ChannelWiseSelectiveMixer(7, expand=2, d_state=3, backend="torch").double()
    x = torch.randn(2, 3, 4, 7, dtype=torch.float64)
    xz = x.reshape(24, 7)[..., None] * layer.in_weight + layer.in_bias  # (tokens, dim, 4)
    u, z = xz.transpose(1, 2).chunk(2, dim=1)  # each (tokens, 2, dim)
    y = sum(reference_scan(d, u, z, reverse=k == 1) for k, d in enumerate(layer.directions))
    expected = (y * layer.out_weight.T).sum(1) + layer.out_bias
    torch.testing.assert_close(layer(x), expected.reshape(x.shape))


def test_channel_mixer_passes_each_channel_steps_tokens_contiguous(monkeypatch):
    """The layer hands the scan u and z (batch, tokens * e, dim) with each channel step's tokens x e values
    adjacent, so a step's loads are one contiguous run (stored token by token they lie `dim` apart:
    BENCHMARKS.md, "The channel mixer's layout"), and returns its output stored channels last like x."""
    from mambamixer.mixer import channel_wise

    seen, scan = [], channel_wise.selective_scan_projected_bidirectional_fn

    def spy(*args, z, **kwargs):
        seen.append((args[0][0], z))
        return scan(*args, z=z, **kwargs)

    monkeypatch.setattr(channel_wise, "selective_scan_projected_bidirectional_fn", spy)
    layer = ChannelWiseSelectiveMixer(7, d_state=3, backend="torch")
    x = torch.randn(2, 3, 4, 7)
    out = layer(x)
    (u, z), = seen
    assert u.shape == z.shape == (2, 12 * 2, 7)
    assert u.stride(1) == z.stride(1) == 1
    assert out.shape == x.shape and out.is_contiguous()


@pytest.mark.parametrize("layer", [lambda b: CrossScanSSM(8, d_state=4, backend=b),
                                   lambda b: ChannelWiseSelectiveMixer(8, d_state=4, backend=b)],
                         ids=["cross_scan", "channel_wise"])
def test_mixers_same_on_both_backends_with_gradients(layer):
    """The Triton kernels (interpreted on CPU) against the torch path, values and every parameter's gradient."""
    torch.manual_seed(2)
    torch_layer = layer("torch")
    triton_layer = layer("triton")
    triton_layer.load_state_dict(torch_layer.state_dict())
    x = torch.randn(2, 3, 5, 8)
    y_torch, y_triton = torch_layer(x), triton_layer(x)
    torch.testing.assert_close(y_triton, y_torch, rtol=1e-4, atol=1e-5)
    y_torch.square().sum().backward()
    y_triton.square().sum().backward()
    for (name, p), q in zip(torch_layer.named_parameters(), triton_layer.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("layer", [lambda: CrossScanSSM(8, d_state=4, backend="triton"),
                                   lambda: ChannelWiseSelectiveMixer(8, d_state=4, backend="triton")],
                         ids=["cross_scan", "channel_wise"])
def test_mixers_recompute_what_the_scans_would_keep_to_the_bit(layer, monkeypatch):
    """The gate z and the x-projection (token mixer), u and z (channel mixer) formed again in the backward
    instead of kept (`recompute_saved`): under bf16 autocast, input and every parameter's gradient equal to
    the bit those of the same layer keeping them, and those of the layer run inside activation checkpointing
    (whose saved-tensor hooks the recomputation's compose with)."""
    from mambamixer.mixer import channel_wise, cross_scan

    def step(model, checkpointed=False):
        model.zero_grad()
        x = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=False) if checkpointed else model(x)
        y.float().square().sum().backward()
        return [x.grad] + [p.grad.clone() for p in model.parameters()]

    torch.manual_seed(3)
    model = layer()
    recomputed, checkpointed = step(model), step(model, checkpointed=True)
    for module in (channel_wise, cross_scan):
        monkeypatch.setattr(module, "recompute_saved", lambda *args: contextlib.nullcontext())
    kept = step(model)
    for a, b, c in zip(recomputed, kept, checkpointed):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_ssd_variant_runs_and_differs_from_s6():
    torch.manual_seed(3)
    x = torch.randn(1, 3, 32, 32)
    s6 = ViM2(num_classes=4, dims=(16, 32), depths=(1, 1), ssm="s6")
    ssd = ViM2(num_classes=4, dims=(16, 32), depths=(1, 1), ssm="ssd")
    y = ssd(x)
    y.sum().backward()
    assert y.shape == (1, 4) and torch.isfinite(y).all()
    assert all(p.grad is not None for p in ssd.parameters())
    assert not torch.allclose(s6(x), y)


@pytest.mark.parametrize("name", [n if n == "vim2_tiny" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(PARAMS)])
def test_registered_models_build_run_and_count(name):
    """Forward and backward at two resolutions (no parameter depends on the image size)."""
    model = timm.create_model(name, num_classes=5)
    count = sum(p.numel() for p in timm.create_model(name).parameters())
    exact, paper = PARAMS[name]
    print(f"{name}: {count / 1e6:.2f} M parameters (paper {paper / 1e6:.0f} M, {100 * (count / paper - 1):+.1f} %)")
    assert count == exact
    assert abs(count / paper - 1) < 0.05
    for size in (32, 64):
        x = torch.randn(2, 3, size, size)
        y = model(x)
        assert y.shape == (2, 5) and torch.isfinite(y).all()
        y.sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        model.zero_grad()


def test_features_only_and_intermediates():
    backbone = timm.create_model("vim2_tiny", features_only=True, dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))
    maps = backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(2, 8, 16, 24), (2, 16, 8, 12), (2, 32, 4, 6), (2, 64, 2, 3)]
    assert backbone.feature_info.channels() == [8, 16, 32, 64]
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]


def test_timm_head_api_and_pretrained_cfg():
    model = timm.create_model("vim2_tiny", num_classes=3, dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))
    assert model.pretrained_cfg["input_size"] == (3, 224, 224) and model.pretrained_cfg["crop_pct"] == 0.9
    x = torch.randn(1, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (1, 1, 1, 64)
    assert model.forward_head(features, pre_logits=True).shape == (1, 64)
    model.reset_classifier(7)
    assert model(x).shape == (1, 7) and model.get_classifier().out_features == 7
    model.reset_classifier(0)
    assert model(x).shape == (1, 64)
    assert {"A_log", "D", "alpha"} <= {n.rsplit(".", 1)[-1] for n in model.no_weight_decay()}


@pytest.mark.slow
def test_bf16_autocast_and_compile():
    model = ViM2(num_classes=3, dims=(8,), depths=(1,))  # one stage: tracing the CPU scans dominates the time
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert torch.isfinite(y.float()).all()
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_training_step_on_the_kernels_traces_to_one_graph():
    """The GPU path (the Triton custom ops) under bf16 autocast compiles with no graph break: a break splits
    the model into frames, and the blocks' forward, one frame per block index, then hits dynamo's
    recompile limit and runs eagerly."""
    model = ViM2(num_classes=3, dims=(8, 16), depths=(2, 1), backend="triton")

    def step(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float().sum()

    explained = torch._dynamo.explain(step)(torch.randn(2, 3, 32, 32))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_token_mixer_keeps_only_what_its_backward_needs():
    """What CrossScanSSM saves for the backward on the kernels under bf16 autocast, in bytes: x (in_proj's
    input), u after the conv and SiLU (u's GEMM, the conv and SiLU are recomputed in the backward from x, not
    saved between them), the four directions' states (one per 32 steps) and out_proj's input. No full delta
    (the scans form it from the low-rank dt), no z (its GEMM is recomputed from x), no x-projection (its GEMM
    is recomputed from u)."""
    batch, height, width, dim, n = 2, 4, 5, 8, 4
    layer = CrossScanSSM(dim, d_state=n, backend="triton")
    tokens, d_inner = batch * height * width, layer.d_inner
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and t.shape[0] in (batch, tokens):  # activations, not weight casts
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randn(batch, height, width, dim, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    states = 4 * batch * 1 * n * d_inner * 4  # one chunk of 20 tokens, float32
    assert sum(saved.values()) == 2 * tokens * (dim + 2 * d_inner) + states


def test_channel_mixer_keeps_only_what_its_backward_needs():
    """What ChannelWiseSelectiveMixer saves for the backward on the kernels under bf16 autocast, in bytes: its
    input transposed (batch, dim, tokens) for the channel-wise map, both directions' states (one per 32
    channel steps, here one) and the scans' output for the map back. Not the lifted u and z: the backward
    forms them again from the transposed input."""
    batch, height, width, dim, n, e = 3, 4, 5, 8, 4, 2
    layer = ChannelWiseSelectiveMixer(dim, expand=e, d_state=n, backend="triton")
    tokens = height * width
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and t.shape[0] == batch:  # activations, not weight casts
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randn(batch, height, width, dim, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    states = 2 * batch * 1 * n * tokens * e * 4  # float32
    assert sum(saved.values()) == 2 * batch * tokens * dim * (1 + e) + states


def test_bad_input_errors():
    model = ViM2(num_classes=3, dims=(8, 16), depths=(1, 1))
    with pytest.raises(ValueError, match=r"x: expected height and width divisible by 8, got \(30, 32\)"):
        model(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, in_chans=3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="dims, depths: expected one dim per stage"):
        ViM2(dims=(8, 16), depths=(1,))
    with pytest.raises(ValueError, match="ssm: expected 's6' or 'ssd'"):
        ViM2(dims=(8,), depths=(1,), ssm="s4")
    with pytest.raises(ValueError, match="pretrained: no pretrained weights"):
        timm.create_model("vim2_tiny", pretrained=True)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, H, W, dim=8\)"):
        CrossScanSSM(8)(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, \.\.\., dim=8\)"):
        ChannelWiseSelectiveMixer(8)(torch.randn(2, 5, 7))
