import contextlib

import pytest
import torch

from mambamixer.mixer.recompute import recompute_saved


def _graph(recompute, calls=None, saved=None):
    """y from v = x @ m through two views of v (each sin saves its own); v recomputed if `recompute`; the
    storages autograd keeps are added to `saved`."""
    torch.manual_seed(0)
    x, m, w = torch.randn(6, 5), torch.randn(5, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True)

    def make():
        if calls is not None:
            calls.append(1)
        return x @ m

    def pack(t):
        if saved is not None:
            saved.add(t.untyped_storage().data_ptr())
        return t

    v = make()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with recompute_saved(v, make, (x, m)) if recompute else contextlib.nullcontext():
            y = (torch.sin(v[:3]) * w).sum() + torch.sin(v[3:].mT).sum()
    return y, (m, w), v


def test_gradients_equal_and_the_tensor_is_not_kept():
    saved = set()
    y, params, v = _graph(recompute=False, saved=saved)
    assert v.untyped_storage().data_ptr() in saved
    expected = torch.autograd.grad(y, params)
    calls, saved = [], set()
    y, params, v = _graph(recompute=True, calls=calls, saved=saved)
    assert v.untyped_storage().data_ptr() not in saved and len(saved) == 2  # sin(v[:3]) and w
    got = torch.autograd.grad(y, params)
    assert len(calls) == 2  # the forward, then once for both views
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


def test_other_saved_tensors_go_to_the_hooks_outside():
    seen, unpacked = [], []

    def pack(t):
        seen.append(t.untyped_storage().data_ptr())
        return ("outer", t)

    def unpack(packed):
        unpacked.append(1)
        return packed[1]

    x = torch.randn(4, 4)
    w = torch.randn(4, 4, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        v = x @ w  # saves x
        with recompute_saved(v, lambda: x @ w, (x, w)):
            y = (v * w).sum()  # saves v (recomputed) and w (outer)
    assert v.untyped_storage().data_ptr() not in seen
    assert w.untyped_storage().data_ptr() in seen and x.untyped_storage().data_ptr() in seen
    (g,) = torch.autograd.grad(y, w)
    assert len(unpacked) == 2
    assert torch.allclose(g, x.T @ w + v)


def test_backward_twice_with_retain_graph():
    calls = []
    y, params, _ = _graph(recompute=True, calls=calls)
    first = torch.autograd.grad(y, params, retain_graph=True)
    second = torch.autograd.grad(y, params)
    assert len(calls) == 3
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_an_input_changed_in_place_raises():
    x, w = torch.randn(3, 3), torch.randn(3, 3, requires_grad=True)
    v = x @ w
    with recompute_saved(v, lambda: x @ w, (x, w)):
        y = (v * w).sum()
    x.add_(1)
    with pytest.raises(RuntimeError, match="modified in place after the forward"):
        y.backward()


def test_a_make_of_another_shape_raises():
    x, w = torch.randn(3, 3), torch.randn(3, 3, requires_grad=True)
    v = x @ w
    with recompute_saved(v, lambda: (x @ w).T.contiguous().T, (x, w)):
        y = (v * w).sum()
    with pytest.raises(RuntimeError, match=r"make\(\) gave \(3, 3\), strides \(1, 3\)"):
        y.backward()


def test_the_forward_autocast_state_is_used_again():
    x = torch.randn(4, 4)
    w = torch.randn(4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = x @ w
        with recompute_saved(v, lambda: x @ w, (x, w)):
            y = (v.float() * w).sum()
    assert v.dtype == torch.bfloat16
    (g,) = torch.autograd.grad(y, w)  # raises if make() ran without autocast (float32, not v's dtype)
    assert g.dtype == torch.float32


def test_no_hooks_without_grad():
    x = torch.randn(2, 2)
    with torch.no_grad():
        context = recompute_saved(x, lambda: x, (x,))
    assert not isinstance(context, torch.autograd.graph.saved_tensors_hooks)
