"""TSM2 and DLinear: shapes, streaming equals the full forecast, causality, overfitting, errors."""

import pytest
import torch

from mambamixer.tasks.forecasting.dlinear import DLinear
from mambamixer.tasks.forecasting.tsm2 import TSM2


def small(**kwargs):
    args = dict(seq_len=48, pred_len=12, n_vars=3, patch_len=8, stride=4, d_model=16, depth=2, d_state=4,
                dropout=0.0)
    return TSM2(**{**args, **kwargs})


@pytest.mark.parametrize("n_vars,n_covariates,ssm", [(1, 0, "s6"), (3, 0, "s6"), (3, 4, "s6"), (5, 2, "ssd")])
def test_shapes_and_every_parameter_learns(n_vars, n_covariates, ssm):
    torch.manual_seed(0)
    model = small(n_vars=n_vars, n_covariates=n_covariates, ssm=ssm)
    x = torch.randn(4, 48, n_vars)
    covariates = torch.randn(4, 48, n_covariates) if n_covariates else None
    y = model(x, covariates)
    assert y.shape == (4, 12, n_vars)
    y.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    if n_vars + n_covariates == 1:  # a scan over one variate never applies its decay A
        silent = [n for n in silent if not (".channel_mixer." in n and n.endswith("A_log"))]
    assert not silent


def test_patches_end_at_the_last_observation():
    model = small(seq_len=50, patch_len=8, stride=4)  # 50 - 8 = 42 = 4 * 10 + 2: two steps before patch 0
    assert model.num_patches == 11 and model.offset == 2


@pytest.mark.parametrize("n_covariates,ssm", [(0, "s6"), (3, "s6"), (2, "ssd")])
def test_stream_one_step_at_a_time_equals_full_window_forecast(n_covariates, ssm):
    torch.manual_seed(1)
    model = small(seq_len=50, n_covariates=n_covariates, ssm=ssm).eval()
    x = 3 * torch.randn(2, 50, 3) + 10  # far from the model's scale: normalisation must match too
    covariates = torch.rand(2, 50, n_covariates) - 0.5 if n_covariates else None
    stream = model.stream(batch=2)
    for t in range(50):
        with pytest.raises(ValueError, match="forecast: needs 50 observations"):
            stream.forecast()
        stream.update(x[:, t], None if covariates is None else covariates[:, t])
    torch.testing.assert_close(stream.forecast(), model(x, covariates), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="already holds a full window"):
        stream.update(x[:, 0])


def test_forecast_is_causal_in_time_up_to_the_normalisation():
    """Changing the last observation changes no representation of an earlier patch."""
    torch.manual_seed(2)
    model = small().eval()
    x = torch.randn(2, 48, 3)
    changed = x.clone()
    changed[:, -1] += 5.0
    streams = []
    for series in (x, changed):
        stream = model.stream(batch=2)
        for t in range(48):
            stream.update(series[:, t])
        streams.append(stream)
    for early_a, early_b in zip(streams[0].features[:-1], streams[1].features[:-1]):
        torch.testing.assert_close(early_a, early_b)
    assert not torch.allclose(streams[0].features[-1], streams[1].features[-1])


@pytest.mark.slow
def test_tiny_model_overfits_a_batch():
    torch.manual_seed(0)
    model = small(n_vars=2, n_covariates=2, d_model=32)
    t = torch.arange(60).float()
    x_all = torch.stack([torch.sin(t / 3 + p) for p in torch.linspace(0, 3, 8)])  # 8 phase-shifted waves
    x_all = torch.stack([x_all, torch.cos(x_all)], dim=-1) + 0.3 * torch.randn(8, 60, 2)
    x, y = x_all[:, :48], x_all[:, 48:]
    covariates = torch.randn(8, 48, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = torch.nn.functional.mse_loss(model(x, covariates), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3


@pytest.mark.parametrize("call,message", [
    (lambda m: m(torch.randn(2, 47, 3)), r"x: expected shape \(batch, seq_len=48, n_vars=3\), got \(2, 47, 3\)"),
    (lambda m: m(torch.randn(2, 48, 4)), r"x: expected shape"),
    (lambda m: m(torch.randn(2, 48, 3), torch.randn(2, 48, 1)),
     r"covariates: this model was built with n_covariates=0"),
    (lambda m: m.stream(2).update(torch.randn(3, 3)), r"x: expected shape \(batch=2, n_vars=3\)"),
    (lambda m: m.stream(2).update(torch.randn(2, 3), torch.randn(2, 1)), r"covariates: expected none"),
])
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call(small())


def test_stream_needs_its_covariates():
    stream = small(n_covariates=2).stream(2)
    with pytest.raises(ValueError, match=r"covariates: expected shape \(2, 2\)"):
        stream.update(torch.randn(2, 3))


def test_bad_construction():
    with pytest.raises(ValueError, match=r"patch_len: expected at most seq_len=8"):
        small(seq_len=8, patch_len=16)
    with pytest.raises(ValueError, match=r"stride: expected a positive int"):
        small(stride=0)
    with pytest.raises(ValueError, match=r"revin_stats: expected 'causal' or 'window', got 'global'"):
        small(revin_stats="global")


@pytest.mark.parametrize("stats", ["causal", "window"])
def test_revin_statistics_up_to_each_patch_or_of_the_whole_window(stats):
    """The embedding sees each patch normalised by the window's statistics up to that patch's end (causal) or
    by the whole window's (window, as RevIN); a window model refuses to stream."""
    torch.manual_seed(3)
    model = small(revin_stats=stats).eval()
    x = 2 * torch.randn(2, 48, 3) + 1
    seen = []
    model.embed.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    model(x)
    series = x.transpose(1, 2)
    for p in range(model.num_patches):
        end = p * model.stride + model.offset + model.patch_len
        upto = series if stats == "window" else series[..., :end]
        mean, var = upto.mean(-1, keepdim=True), upto.var(-1, keepdim=True, correction=0)
        patch = series[..., end - model.patch_len:end]
        torch.testing.assert_close(seen[0][:, :, p], (patch - mean) / torch.sqrt(var + model.eps), rtol=1e-4,
                                   atol=1e-5)
    if stats == "window":
        with pytest.raises(ValueError, match="revin_stats: streaming needs 'causal' statistics"):
            model.stream(batch=2)


def test_dlinear():
    model = DLinear(seq_len=48, pred_len=12, n_vars=3)
    assert model(torch.randn(4, 48, 3)).shape == (4, 12, 3)
    # A constant series is all trend: the forecast is what the trend layer makes of a constant.
    constant = torch.full((1, 48, 3), 2.0)
    expected = model.trend(torch.full((1, 3, 48), 2.0)) + model.remainder(torch.zeros(1, 3, 48))
    torch.testing.assert_close(model(constant), expected.transpose(1, 2))
    with pytest.raises(ValueError, match=r"n_covariates: DLinear takes no covariates"):
        DLinear(48, 12, 3, n_covariates=4)
