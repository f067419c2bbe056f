"""MambaMixer layers: shapes, gradients, directions, weighted averaging, precision and compile."""

import pytest
import torch
import torch.nn as nn

from mambamixer.mixer import MambaMixer, MambaMixerBlock, SelectiveChannelMixer, SelectiveSSM, SelectiveTokenMixer

VARIANTS = [
    dict(ssm="s6"),
    dict(ssm="s6", bidirectional=True),
    dict(ssm="s6", bidirectional=True, causal=False, d_conv=3),
    dict(ssm="ssd", headdim=8),
    dict(ssm="ssd", headdim=8, ngroups=2, bidirectional=True, chunk_size=5),
]


@pytest.mark.parametrize("kwargs", VARIANTS, ids=str)
def test_selective_ssm_shape_and_every_parameter_learns(kwargs):
    torch.manual_seed(0)
    layer = SelectiveSSM(16, d_state=4, **kwargs)
    x = torch.randn(3, 11, 16)
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_initialisation_follows_mamba():
    layer = SelectiveSSM(32, d_state=8, dt_min=1e-3, dt_max=1e-1)
    direction = layer.directions[0]
    torch.testing.assert_close(-torch.exp(direction.A_log), -torch.arange(1.0, 9.0).expand(64, 8))
    dt = nn.functional.softplus(direction.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    torch.testing.assert_close(direction.D, torch.ones(64))


@pytest.mark.parametrize("ssm", ["s6", "ssd"])
def test_unidirectional_is_causal_and_bidirectional_sees_the_future(ssm):
    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    later = x.clone()
    later[:, -1] += 1.0
    uni = SelectiveSSM(16, d_state=4, ssm=ssm, headdim=8)
    bi = SelectiveSSM(16, d_state=4, ssm=ssm, headdim=8, bidirectional=True)
    with torch.no_grad():
        torch.testing.assert_close(uni(x)[:, :-1], uni(later)[:, :-1])
        assert (bi(x)[:, 0] - bi(later)[:, 0]).abs().max() > 1e-6
        # With the backward direction's output zeroed, the bidirectional layer is the unidirectional one.
        bi.directions[0].load_state_dict(uni.directions[0].state_dict())
        bi.in_proj.load_state_dict(uni.in_proj.state_dict())
        bi.out_proj.load_state_dict(uni.out_proj.state_dict())
        assert (bi(x) - uni(x)).abs().max() > 1e-6
        bi.directions[1].D.zero_()
        bi.directions[1].x_proj.weight.zero_()
        torch.testing.assert_close(bi(x), uni(x))


def test_channel_mixer_mixes_channels():
    torch.manual_seed(0)
    mixer = SelectiveChannelMixer(10, d_state=4)
    x = torch.randn(2, 10, 6)
    y = mixer(x)
    assert y.shape == x.shape
    moved = x.clone()
    moved[:, :, -1] += 1.0  # change the last channel only
    with torch.no_grad():
        assert (mixer(moved)[:, :, 0] - y[:, :, 0]).abs().max() > 1e-6  # bidirectional: reaches channel 0
    with pytest.raises(ValueError, match=r"hidden: expected shape \(batch, L=10, dim\)"):
        mixer(torch.randn(2, 9, 6))


def test_token_mixer_is_a_selective_ssm_over_tokens():
    mixer = SelectiveTokenMixer(8, d_state=4)
    assert mixer(torch.randn(2, 5, 8)).shape == (2, 5, 8)
    with pytest.raises(ValueError, match=r"hidden: expected shape \(batch, L, d_model=8\)"):
        mixer(torch.randn(2, 5, 7))


def _block(index, dim=8, tokens=6):
    return MambaMixerBlock(index, dim, SelectiveTokenMixer(dim, d_state=4), SelectiveChannelMixer(tokens, d_state=4))


def test_block_starts_as_a_sequential_stack():
    torch.manual_seed(0)
    block = _block(3)
    ys = [torch.randn(2, 6, 8) for _ in range(6)]
    tokens, channels = ys[:3], ys[3:]
    y_token, y_channel = block(tokens, channels)
    x = channels[-1]
    expected_token = x + block.token_mixer(block.token_norm(x))
    torch.testing.assert_close(y_token, expected_token)
    torch.testing.assert_close(y_channel, y_token + block.channel_mixer(block.channel_norm(y_token)))


def test_block_weighted_averaging_uses_every_earlier_output():
    torch.manual_seed(0)
    block = _block(3)
    with torch.no_grad():
        for w in (block.alpha, block.beta, block.theta, block.gamma):
            w.uniform_(0.5, 1.5)
    tokens = [torch.randn(2, 6, 8) for _ in range(3)]
    channels = [torch.randn(2, 6, 8) for _ in range(3)]
    with torch.no_grad():
        base = block(tokens, channels)[1]
        for which in (tokens, channels):
            for i in range(3):
                kept = which[i]
                which[i] = torch.zeros_like(kept)
                assert (block(tokens, channels)[1] - base).abs().max() > 1e-4, (which is tokens, i)
                which[i] = kept


def test_weighted_averaging_weights_receive_gradients_at_initialisation():
    torch.manual_seed(0)
    model = MambaMixer(8, 6, depth=3, token_mixer=dict(d_state=4), channel_mixer=dict(d_state=4))
    model(torch.randn(2, 6, 8)).square().sum().backward()
    for block in model.blocks:
        for w in (block.alpha, block.beta, block.theta, block.gamma):
            assert (w.grad != 0).all()


def test_block_rejects_wrong_history():
    with pytest.raises(ValueError, match=r"block 2 needs 2 earlier outputs"):
        _block(2)([torch.randn(2, 6, 8)], [torch.randn(2, 6, 8)])
    with pytest.raises(ValueError, match=r"index: blocks are numbered from 1"):
        _block(0)


@pytest.mark.parametrize("ssm", ["s6", "ssd"])
def test_mamba_mixer_stack(ssm):
    torch.manual_seed(0)
    model = MambaMixer(16, 9, depth=3, token_mixer=dict(d_state=4, ssm=ssm, headdim=8),
                       channel_mixer=dict(d_state=4), drop_path=0.1)
    x = torch.randn(2, 9, 16)
    y = model(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_bfloat16_autocast():
    torch.manual_seed(0)
    model = MambaMixer(16, 9, depth=2, token_mixer=dict(d_state=4), channel_mixer=dict(d_state=4))
    x = torch.randn(2, 9, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    # The residual stream (input plus the weighted averages) keeps the input's dtype; the mixers run in bf16.
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    ref = model(x)
    assert 0 < ((y - ref).norm() / ref.norm()) < 5e-2
    y.float().sum().backward()


@pytest.mark.slow
@pytest.mark.parametrize("ssm", ["s6", "ssd"])
def test_torch_compile(ssm):
    torch.manual_seed(0)
    layer = SelectiveSSM(8, d_state=4, ssm=ssm, headdim=8, bidirectional=True)
    x = torch.randn(2, 7, 8)
    compiled = torch.compile(layer)
    y = compiled(x)
    torch.testing.assert_close(y, layer(x), rtol=1e-4, atol=1e-5)
    y.sum().backward()
