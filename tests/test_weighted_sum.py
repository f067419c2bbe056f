"""`weighted_sum`: the Triton kernels (run by Triton's interpreter on CPU) against the float64 multiply-add chain,
its dispatch and its errors."""

import pytest
import torch

from mambamixer.kernels import weighted_sum, weighted_sum_ref
from mambamixer.kernels.weighted_sum import triton_op
from mambamixer.mixer import MambaMixerBlock, SelectiveChannelMixer, SelectiveTokenMixer

from helpers import rel_err


def inputs(k, shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(k, generator=g, dtype=torch.float64)
    tensors = [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(k)]
    return weights.to(dtype), [t.to(dtype) for t in tensors]


def leaves(weights, tensors, dtype):
    return [t.detach().to(dtype).requires_grad_(True) for t in (weights, *tensors)]


@pytest.mark.parametrize("k", [1, 3, 8, 9, 20])
@pytest.mark.parametrize("shape", [(1,), (3, 5, 7), (2, 1031)])
def test_forward_and_gradients_match_float64_chain(k, shape):
    """One launch (k <= 8) and several accumulated in float32 (9 and 20 tensors); sizes of one element, an
    odd count and one past a program's block of elements."""
    weights, tensors = inputs(k, shape, seed=k)
    ours, ref = leaves(weights, tensors, torch.float32), leaves(weights, tensors, torch.float64)
    out = weighted_sum(ours[0], ours[1:], backend="triton")
    expected = weighted_sum_ref(ref[0], ref[1:])
    assert out.dtype == torch.float32 and out.shape == shape
    assert rel_err(out, expected) < 1e-6
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    got = torch.autograd.grad(out, ours, grad.float())
    want = torch.autograd.grad(expected, ref, grad)
    assert all(a.dtype == t.dtype for a, t in zip(got, ours))
    # Each weight's gradient is a float32 sum of grad * tensor over all elements, which can cancel: its error
    # is bounded against the sum of the terms' magnitudes, not against the (possibly tiny) result.
    magnitudes = torch.stack([(grad * t).abs().sum() for t in ref[1:]])
    assert ((got[0].double() - want[0]).abs() <= 1e-6 * magnitudes).all(), "weights"
    for i, (a, b) in enumerate(zip(got[1:], want[1:])):
        assert rel_err(a, b) < 1e-6, f"tensors[{i}]"


def test_non_contiguous_and_mixed_dtypes():
    """A transposed view is read as its values, and bfloat16 and float32 tensors give a float32 sum (PyTorch's
    promotion) with each gradient in its tensor's dtype."""
    weights, tensors = inputs(3, (6, 5), seed=1)
    args = [weights.float(), tensors[0].float().t(), tensors[1].bfloat16().t(), tensors[2].float().t()]
    args = [a.detach().requires_grad_(True) for a in args]
    out = weighted_sum(args[0], args[1:], backend="triton")
    expected = weighted_sum_ref(args[0].double(), [a.double() for a in args[1:]])
    assert out.dtype == torch.float32 and out.shape == (5, 6)
    assert rel_err(out, expected) < 1e-6
    out.sum().backward()
    assert args[2].grad.dtype == torch.bfloat16
    assert rel_err(args[1].grad, torch.full((5, 6), args[0][0].item())) < 1e-6


def test_bfloat16_rounds_once():
    """Across several launches the sum is held in float32 and rounded to bfloat16 once."""
    weights, tensors = inputs(12, (64,), seed=2)
    out = weighted_sum(weights.float(), [t.bfloat16() for t in tensors], backend="triton")
    exact = weighted_sum_ref(weights, [t.bfloat16().double() for t in tensors])
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, exact.bfloat16())


def test_empty_tensors():
    weights, tensors = inputs(2, (0, 3), dtype=torch.float32)
    assert weighted_sum(weights, tensors, backend="triton").shape == (0, 3)


def test_auto_uses_the_chain_on_cpu(monkeypatch):
    monkeypatch.setattr(triton_op.WeightedSum, "apply", lambda *a: pytest.fail("the kernels ran on CPU"))
    weights, tensors = inputs(4, (2, 3), seed=3)
    assert rel_err(weighted_sum(weights, tensors), weighted_sum_ref(weights, tensors)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_torch_compile_traces_the_chain(backend):
    """Under torch.compile the op is the multiply-add chain, in one graph, whatever the backend."""
    weights, tensors = inputs(3, (4, 5), seed=4, dtype=torch.float32)
    compiled = torch.compile(lambda w, *xs: weighted_sum(w, list(xs), backend=backend), backend="aot_eager",
                             fullgraph=True)
    torch.testing.assert_close(compiled(weights, *tensors), weighted_sum_ref(weights, tensors))


def test_block_backends_agree():
    """A MambaMixerBlock's weighted averaging through the kernels equals the chain, outputs and gradients."""
    torch.manual_seed(0)
    blocks = {b: MambaMixerBlock(2, 8, SelectiveTokenMixer(8, d_state=4), SelectiveChannelMixer(6, d_state=4),
                                 backend=b) for b in ("torch", "triton")}
    with torch.no_grad():  # every averaging weight in use, not only the initial sequential ones
        for name in ("alpha", "beta", "theta", "gamma"):
            getattr(blocks["torch"], name).normal_()
    blocks["triton"].load_state_dict(blocks["torch"].state_dict())
    history = [torch.randn(2, 6, 8) for _ in range(4)]
    outs = {}
    for b, block in blocks.items():
        y_token, y_channel = block(history[:2], history[2:])
        (y_token.square().sum() + y_channel.sum()).backward()
        outs[b] = (y_token, y_channel)
    for a, b in zip(outs["triton"], outs["torch"]):
        assert rel_err(a, b) < 1e-5
    for (name, p), q in zip(blocks["torch"].named_parameters(), blocks["triton"].parameters()):
        assert rel_err(q.grad, p.grad) < 1e-5, name


@pytest.mark.parametrize("weights, tensors, message", [
    (torch.ones(2), [], r"tensors: expected a non-empty list of tensors, got list \(empty\)"),
    (torch.ones(2), [torch.ones(3), torch.ones(4)], r"tensors\[1\]: expected shape \(3,\) on cpu"),
    (torch.ones(2), [torch.ones(3), torch.ones(3, dtype=torch.int64)], r"tensors\[1\]: expected a floating dtype"),
    (torch.ones(3), [torch.ones(3), torch.ones(3)], r"weights: expected a floating tensor of shape \(2,\)"),
    ([1.0, 2.0], [torch.ones(3), torch.ones(3)], r"weights: .* got list"),
])
def test_errors_name_the_argument(weights, tensors, message):
    with pytest.raises(ValueError, match=message):
        weighted_sum(weights, tensors)


def test_float64_on_the_kernels_is_refused():
    weights, tensors = inputs(2, (3,))
    with pytest.raises(ValueError, match="backend: 'triton' takes float32"):
        weighted_sum(weights, tensors, backend="triton")
