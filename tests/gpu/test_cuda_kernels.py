"""The fused kernels on a CUDA device against the local reference. Skipped on machines without CUDA (and the
Transformer Engine case without transformer_engine): run them wherever a GPU is available."""

import importlib.util

import pytest
import torch

from megarecipe.config import ModelConfig
from megarecipe.model.convert import canonical_name, te_name

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HAS_TE = importlib.util.find_spec("transformer_engine") is not None


def outputs(model, bf16: bool):
    gen = torch.Generator().manual_seed(3)
    tokens, targets = (torch.randint(0, 512, (2, 256), generator=gen).cuda() for _ in range(2))
    positions = torch.arange(256, device="cuda").unsqueeze(0).expand_as(tokens)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        logits = model(tokens, positions, None)
        model(tokens, positions, None, labels=targets).float().mean().backward()
    grads = {canonical_name(n): p.grad.float() for n, p in model.named_parameters()}
    return logits.float().detach(), grads


def build(kernels: str, state=None):
    from megarecipe.model.llama import build_model

    model = build_model(ModelConfig(seq_len=256, init_std=0.2), 512, kernels=kernels).cuda()
    if state is not None:
        names = {te_name(k) if kernels == "te" else k: v for k, v in state.items() if not k.endswith("_extra_state")}
        missing, unexpected = model.load_state_dict(names, strict=False)
        assert not unexpected and all(k.endswith("_extra_state") for k in missing), (missing, unexpected)
    return model


def close(got, want, rel: float):
    return (got - want).norm() <= rel * want.norm()


@pytest.mark.parametrize(
    "kernels,bf16,rel",
    [
        ("sdpa", False, 1e-4),
        ("sdpa", True, 2e-2),
        pytest.param("te", False, 1e-3, marks=pytest.mark.skipif(not HAS_TE, reason="needs transformer_engine")),
        pytest.param("te", True, 2e-2, marks=pytest.mark.skipif(not HAS_TE, reason="needs transformer_engine")),
    ],
)
def test_fused_kernels_match_the_local_reference(megatron_world, kernels, bf16, rel):
    local = build("local")
    want_logits, want_grads = outputs(local, bf16)
    got_logits, got_grads = outputs(build(kernels, local.state_dict()), bf16)
    assert close(got_logits, want_logits, rel)
    assert set(got_grads) == set(want_grads)
    for name, grad in want_grads.items():
        assert close(got_grads[name], grad, 10 * rel), name
