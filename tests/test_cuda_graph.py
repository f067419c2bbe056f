"""`GraphedTraining` off the GPU: which models and calls it would capture, and that it runs the model as is.
The replay itself is checked against eager training on the GPU (`bench/cuda_check.py`)."""

import torch

from mambamixer.mixer import Hybrid
from mambamixer.tasks.forecasting.tsm2 import TSM2
from mambamixer.utils.cuda_graph import GraphedTraining


def tsm2(**kwargs) -> TSM2:
    return TSM2(32, 8, 3, n_covariates=2, patch_len=8, stride=8, d_model=16, d_state=4, dropout=0.2, **kwargs)


def test_what_qualifies_for_capture():
    model = tsm2()
    assert GraphedTraining(model).model_qualifies()
    assert not GraphedTraining(model, enabled=False).model_qualifies()
    with torch.no_grad():
        assert not GraphedTraining(model).model_qualifies()
    assert not GraphedTraining(model.eval()).model_qualifies()
    model.train().compile()
    assert not GraphedTraining(model).model_qualifies()
    moe = tsm2(hybrid=Hybrid(attn_every=0, moe_every=2, moe_offset=1, num_experts=4))
    assert not GraphedTraining(moe).model_qualifies()


def test_cpu_inputs_run_the_model_eagerly():
    model = tsm2()
    x, c = torch.randn(4, 32, 3), torch.randn(4, 32, 2)
    graphed = GraphedTraining(model)
    torch.manual_seed(0)
    out = graphed(x, c)
    torch.manual_seed(0)
    torch.testing.assert_close(out, model(x, c), rtol=0, atol=0)
    assert graphed._graphed is None
