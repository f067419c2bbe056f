"""Jamba-style hybrid layers: attention and mixture-of-experts against plain-PyTorch references, the router's
gradients and load-balancing loss, the hybrid pattern in MambaMixer, TSM2 and ViM2, streaming, and errors."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from mambamixer.mixer import AttentionMixer, Hybrid, MambaMixer, MoEMLP, moe_aux_loss
from mambamixer.mixer.hybrid import Flattened2d, as_hybrid
from mambamixer.tasks.forecasting.tsm2 import TSM2
from mambamixer.utils.moe_loss import add_moe_loss


def attention_reference(layer: AttentionMixer, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention written out: rotary positions as complex rotations, key/value heads repeated for
    their query heads, an explicit causal mask."""
    batch, length, dim = x.shape
    hd, heads, kv = layer.head_dim, layer.num_heads, layer.num_kv_heads
    qkv = x @ layer.qkv.weight.T + (0 if layer.qkv.bias is None else layer.qkv.bias)
    q = qkv[..., :heads * hd].reshape(batch, length, heads, hd).transpose(1, 2)
    k = qkv[..., heads * hd:(heads + kv) * hd].reshape(batch, length, kv, hd).transpose(1, 2)
    v = qkv[..., (heads + kv) * hd:].reshape(batch, length, kv, hd).transpose(1, 2)
    if layer.rope:
        half = hd // 2
        theta = torch.arange(length, dtype=x.dtype)[:, None] * layer.rope_base ** (-torch.arange(half, dtype=x.dtype)
                                                                                     / half)
        turn = torch.polar(torch.ones_like(theta), theta)

        def rotate(t):
            z = torch.complex(t[..., :half], t[..., half:]) * turn
            return torch.cat([z.real, z.imag], dim=-1)
        q, k = rotate(q), rotate(k)
    k, v = k.repeat_interleave(heads // kv, dim=1), v.repeat_interleave(heads // kv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if layer.causal:
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    y = scores.softmax(-1) @ v
    return y.transpose(1, 2).reshape(batch, length, dim) @ layer.proj.weight.T + layer.proj.bias


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("rope", [True, False])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_attention_matches_reference(causal, rope, kv_heads):
    torch.manual_seed(0)
    layer = AttentionMixer(16, num_heads=4, num_kv_heads=kv_heads, causal=causal, rope=rope).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    out, ref = layer(x), attention_reference(layer, x)
    torch.testing.assert_close(out, ref)
    g, g_ref = torch.randn_like(out), None
    grads = torch.autograd.grad(out, [x, layer.qkv.weight], g)
    g_ref = torch.autograd.grad(ref, [x, layer.qkv.weight], g)
    for a, b in zip(grads, g_ref):
        torch.testing.assert_close(a, b)


def test_rope_makes_attention_depend_on_order():
    """Without positions attention is permutation-equivariant; with rotary positions it is not."""
    torch.manual_seed(1)
    x = torch.randn(1, 6, 8)
    perm = torch.randperm(6)
    plain = AttentionMixer(8, num_heads=2, causal=False, rope=False)
    torch.testing.assert_close(plain(x)[:, perm], plain(x[:, perm]))
    rotary = AttentionMixer(8, num_heads=2, causal=False, rope=True)
    assert not torch.allclose(rotary(x)[:, perm], rotary(x[:, perm]), atol=1e-4)


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_attention_stream_in_pieces_equals_one_call(kv_heads):
    torch.manual_seed(2)
    layer = AttentionMixer(16, num_heads=4, num_kv_heads=kv_heads, causal=True, rope=True).eval()
    x = torch.randn(3, 10, 16)
    cache = layer.allocate_state(3)
    pieces = [layer(piece, state=cache) for piece in x.split([3, 1, 4, 2], dim=1)]
    assert cache.length == 10
    torch.testing.assert_close(torch.cat(pieces, dim=1), layer(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(dim=10, num_heads=4), "num_heads: expected a positive divisor of dim=10"),
    (dict(dim=16, num_heads=4, num_kv_heads=3), "num_kv_heads: expected a positive divisor of num_heads=4"),
    (dict(dim=12, num_heads=4, rope=True), "rope: needs an even head_dim"),
])
def test_attention_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionMixer(**kwargs)


def test_attention_bad_use():
    layer = AttentionMixer(8, num_heads=2, causal=False)
    with pytest.raises(ValueError, match=r"hidden: expected shape \(batch, L, dim=8\)"):
        layer(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="state: streaming needs a causal layer"):
        layer.allocate_state(2)


def moe_reference(layer: MoEMLP, x: torch.Tensor, capacity: int | None = None) -> torch.Tensor:
    """Every expert on every token, then the top-k mix; with `capacity`, an expert keeps only its first
    `capacity` assignments in the order (choice rank, token)."""
    tokens = x.reshape(-1, layer.dim)
    probs = (tokens @ layer.router.weight.T).softmax(-1)
    top, chosen = probs.topk(layer.top_k, dim=-1)
    weights = top / top.sum(-1, keepdim=True) if layer.top_k > 1 else top
    outs = torch.stack([F.gelu(tokens @ layer.w1[e] + layer.b1[e]) @ layer.w2[e] + layer.b2[e]
                        for e in range(layer.num_experts)], dim=1)  # (T, E, dim)
    keep = torch.ones_like(chosen, dtype=torch.bool)
    if capacity is not None:
        taken = [0] * layer.num_experts
        for rank in range(layer.top_k):
            for t in range(len(tokens)):
                e = int(chosen[t, rank])
                keep[t, rank] = taken[e] < capacity
                taken[e] += 1
    picked = outs.gather(1, chosen[..., None].expand(-1, -1, layer.dim))  # (T, k, dim)
    return (picked * (weights * keep)[..., None]).sum(1).reshape(x.shape)


@pytest.mark.parametrize("experts,top_k", [(16, 2), (4, 1), (3, 3)])
def test_moe_matches_dense_reference_with_gradients(experts, top_k):
    torch.manual_seed(3)
    layer = MoEMLP(8, num_experts=experts, top_k=top_k, hidden=12).double()
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64, requires_grad=True)  # any leading axes
    out, ref = layer(x), moe_reference(layer, x)
    torch.testing.assert_close(out, ref)
    params = [x, layer.router.weight, layer.w1, layer.b1, layer.w2, layer.b2]
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, params, g)
    for a, b in zip(grads, torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b)
    assert grads[1].abs().sum() > 0  # the router learns from the task loss through its choices' weights


def test_load_balancing_loss_is_the_switch_formula_and_trains_the_router():
    torch.manual_seed(4)
    layer = MoEMLP(8, num_experts=4, top_k=2, hidden=8).double()
    x = torch.randn(40, 8, dtype=torch.float64)
    layer(x)
    probs = (x @ layer.router.weight.T).softmax(-1)
    chosen = probs.topk(2, dim=-1).indices
    fraction = torch.bincount(chosen.flatten(), minlength=4).double() / chosen.numel()
    expected = 4 * (fraction * probs.mean(0)).sum()
    torch.testing.assert_close(layer.aux_loss, expected)
    (grad,) = torch.autograd.grad(layer.aux_loss, layer.router.weight)
    (grad_ref,) = torch.autograd.grad(expected, layer.router.weight)
    torch.testing.assert_close(grad, grad_ref)
    assert grad.abs().sum() > 0
    # Perfectly balanced routing gives 1: uniform probabilities and every expert chosen equally often.
    assert 4 * (torch.full((4,), 0.25) * torch.full((4,), 0.25)).sum() == 1


def test_capacity_drops_overflow_in_training_only():
    torch.manual_seed(5)
    layer = MoEMLP(8, num_experts=4, top_k=2, hidden=8, capacity_factor=0.5).double()
    x = torch.randn(12, 8, dtype=torch.float64)
    capacity = math.ceil(0.5 * 12 * 2 / 4)
    torch.testing.assert_close(layer.train()(x), moe_reference(layer, x, capacity))
    assert not torch.allclose(moe_reference(layer, x, capacity), moe_reference(layer, x))
    torch.testing.assert_close(layer.eval()(x), moe_reference(layer, x))  # eval: nothing dropped


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_experts=0), "num_experts: expected at least 1"),
    (dict(num_experts=4, top_k=5), "top_k: expected 1 <= top_k <= num_experts=4"),
    (dict(capacity_factor=0.0), "capacity_factor: expected a positive number or None"),
])
def test_moe_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MoEMLP(8, **kwargs)


def test_moe_bad_input():
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., dim=8\)"):
        MoEMLP(8, num_experts=2, top_k=1)(torch.randn(3, 7))


def test_pattern_places_attention_and_experts_as_jamba():
    jamba = Hybrid()
    assert [i for i in range(16) if jamba.is_attention(i)] == [4, 12]
    assert [i for i in range(6) if jamba.has_moe(i)] == [1, 3, 5]
    off = Hybrid(attn_every=0, moe_every=3, moe_offset=0)
    assert not any(off.is_attention(i) for i in range(10)) and [i for i in range(7) if off.has_moe(i)] == [0, 3, 6]


@pytest.mark.parametrize("config,message", [
    (dict(attn_every=4, attn_offset=4), r"hybrid.attn_offset: expected 0 <= attn_offset < attn_every=4, got 4"),
    (dict(moe_every=-1), "hybrid.moe_every: expected 0 .off. or a positive period"),
    (dict(experts=4), r"hybrid: unknown keys \['experts'\]"),
])
def test_bad_hybrid_config(config, message):
    with pytest.raises(ValueError, match=message):
        as_hybrid(config)


def test_pattern_without_any_layer_in_the_depth_is_named():
    with pytest.raises(ValueError, match="place no attention or MoE layer in 2 blocks"):
        MambaMixer(8, 5, depth=2, hybrid=dict(attn_every=8, attn_offset=4, moe_every=4, moe_offset=3))


def test_mambamixer_stack_with_hybrid_blocks_trains():
    torch.manual_seed(6)
    stack = MambaMixer(8, 5, depth=4, token_mixer=dict(d_state=4),
                       hybrid=dict(attn_every=2, attn_offset=1, moe_every=2, moe_offset=0, num_heads=2, num_experts=4))
    kinds = [type(b.token_mixer).__name__ for b in stack.blocks]
    assert kinds == ["SelectiveTokenMixer", "AttentionMixer", "SelectiveTokenMixer", "AttentionMixer"]
    assert [b.mlp is not None for b in stack.blocks] == [True, False, True, False]
    assert all(b.token_mixer.causal for b in stack.blocks)
    y = stack(torch.randn(2, 5, 8))
    loss = y.square().mean() + 0.01 * moe_aux_loss(stack)
    loss.backward()
    # The weighted averaging learns across attention and MoE blocks alike.
    assert all(b.alpha.grad is not None and b.theta.grad.abs().sum() > 0 for b in stack.blocks)
    assert all(p.grad is not None for b in stack.blocks if b.mlp is not None for p in b.mlp.parameters())


HYBRID = dict(attn_every=2, attn_offset=1, moe_every=2, moe_offset=1, num_heads=2, num_experts=4)


@pytest.mark.parametrize("n_covariates", [0, 2])
def test_tsm2_hybrid_stream_equals_full_forward(n_covariates):
    """The attention block keeps a KV cache beside the scan states: one observation at a time gives the
    full window's forecast."""
    torch.manual_seed(7)
    model = TSM2(seq_len=40, pred_len=6, n_vars=3, n_covariates=n_covariates, patch_len=8, stride=4, d_model=8,
                 depth=2, d_state=4, dropout=0.0, hybrid=HYBRID).eval()
    assert type(model.blocks[1].token_mixer.layer).__name__ == "AttentionMixer" and model.blocks[1].mlp is not None
    x = 3 * torch.randn(2, 40, 3) + 5
    covariates = torch.rand(2, 40, n_covariates) if n_covariates else None
    stream = model.stream(batch=2)
    for t in range(40):
        stream.update(x[:, t], None if covariates is None else covariates[:, t])
    torch.testing.assert_close(stream.forecast(), model(x, covariates), rtol=1e-4, atol=1e-4)


def test_tsm2_hybrid_is_causal_in_time():
    """Changing the last observations leaves the features of earlier patches alone (the attention is causal)."""
    torch.manual_seed(8)
    model = TSM2(seq_len=40, pred_len=6, n_vars=2, patch_len=8, stride=8, d_model=8, depth=2, d_state=4,
                 dropout=0.0, revin=False, hybrid=HYBRID).eval()
    x = torch.randn(1, 40, 2)
    later = x.clone()
    later[:, 32:] += 1.0
    h, h_later = (model._mix(model.embed(model._patches(v.transpose(1, 2))), None) for v in (x, later))
    torch.testing.assert_close(h[:, :, :4], h_later[:, :, :4])
    assert not torch.allclose(h[:, :, 4], h_later[:, :, 4])


def test_vim2_hybrid_builds_trains_and_reports_its_loss():
    torch.manual_seed(9)
    model = timm.create_model("vim2_tiny", num_classes=5, dims=[16, 32, 64, 128], depths=[1, 1, 2, 1],
                              hybrid=dict(attn_every=4, attn_offset=1, moe_every=2, moe_offset=1, num_heads=4,
                                          rope=False, num_experts=4))
    blocks = [b for stage in model.stages for b in stage.blocks]
    assert [isinstance(b.token_mixer, Flattened2d) for b in blocks] == [False, True, False, False, False]
    assert not blocks[1].token_mixer.layer.causal
    assert [b.mlp is not None for b in blocks] == [False, True, False, True, False]
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5)
    aux = moe_aux_loss(model)
    assert aux is not None and aux.requires_grad
    (logits.logsumexp(-1).mean() + aux).backward()
    assert blocks[3].mlp.router.weight.grad.abs().sum() > 0


class _Logged:
    """Stands in for a LightningModule: a model and a log that records."""

    def __init__(self, model):
        self.model, self.logged = model, {}

    def log(self, name, value, **kwargs):
        self.logged[name] = value


def test_add_moe_loss_joins_the_training_loss():
    layer = MoEMLP(4, num_experts=2, top_k=1)
    host = _Logged(torch.nn.Sequential(layer))
    host.model(torch.randn(6, 4))
    loss = torch.tensor(1.0)
    torch.testing.assert_close(add_moe_loss(host, loss, 0.5, 6), 1.0 + 0.5 * layer.aux_loss)
    assert "train/moe_aux" in host.logged
    plain = _Logged(torch.nn.Linear(2, 2))
    assert add_moe_loss(plain, loss, 0.5, 6) is loss and not plain.logged
