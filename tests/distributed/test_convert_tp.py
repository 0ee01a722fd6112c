"""split_tensor_parallel against what a real TP=2 megatron model holds, and merge_tensor_parallel back.

Run with two ranks (forked from the warm server, or as a script under torchrun), this file is the worker: it
builds a TP=1 model, then a TP=2 model from the same seed, then a TP=2 model loaded from the split TP=1
weights, and saves each one's parameters and outputs. The tests compare them. megatron
(use_cpu_initialization) draws each full weight from the CPU generator and hands each rank its slice, so with
the same seed the TP=2 shards are exactly the split of the TP=1 weights.
"""

import os
import sys

import pytest
import torch

from megarecipe.config import ModelConfig
from megarecipe.model.convert import merge_tensor_parallel, split_tensor_parallel

pytestmark = pytest.mark.slow

SEED, VOCAB, BATCH, SEQ = 5, 2048, 2, 24
SHAPES = {
    "default": dict(init_std=0.2),  # 4 heads / 2 groups: 1 group a rank
    "gqa8": dict(num_attention_heads=8, num_query_groups=4, init_std=0.2),
}  # 2 groups a rank


def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen), torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)


def worker(out: str) -> None:
    from megarecipe.parallel import cpu_compat

    cpu_compat.apply()
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    from megarecipe.model.llama import build_model

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    tokens, targets = batch()
    positions = torch.arange(SEQ).unsqueeze(0).expand(BATCH, -1)

    def build(m, tp, seed):
        ps.initialize_model_parallel(tensor_model_parallel_size=tp)
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
        return build_model(m, VOCAB).eval()

    def outputs(model):
        with torch.no_grad():
            return {"logits": model(tokens, positions, None), "loss": model(tokens, positions, None, labels=targets)}

    for name, shape in SHAPES.items():
        m = ModelConfig(**shape)
        full = {k: p.detach().clone() for k, p in build(m, 1, SEED).named_parameters()}
        ps.destroy_model_parallel()

        sharded = build(m, 2, SEED)
        result = {"params": {k: p.detach().clone() for k, p in sharded.named_parameters()}, **outputs(sharded)}

        tensor_parallel.model_parallel_cuda_manual_seed(SEED + 1)
        loaded = build_model(m, VOCAB).eval()  # same layout, other weights, then the split of the TP=1 ones
        with torch.no_grad():
            for k, p in loaded.named_parameters():
                p.copy_(split_tensor_parallel(k, full[k], 2)[ps.get_tensor_model_parallel_rank()])
        result["loaded"] = outputs(loaded)
        ps.destroy_model_parallel()

        torch.save(result, os.path.join(out, f"{name}.tp2.rank{rank}.pt"))
        if rank == 0:
            torch.save(full, os.path.join(out, f"{name}.tp1.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from megarecipe.launch import direct
    from tests.helpers import REPO, env

    out = tmp_path_factory.mktemp("convert_tp")
    result = direct.captured([str(out)], 2, env(), str(REPO), 300, module="tests.distributed.test_convert_tp")
    if result.returncode != 0:
        pytest.fail(f"worker exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return out


def load(saved, name):
    full = torch.load(saved / f"{name}.tp1.pt")
    ranks = [torch.load(saved / f"{name}.tp2.rank{r}.pt") for r in range(2)]
    return full, ranks


@pytest.mark.parametrize("name", SHAPES)
def test_split_of_tp1_weights_is_what_tp2_ranks_hold(saved, name):
    full, ranks = load(saved, name)
    assert set(ranks[0]["params"]) == set(full)
    for key, tensor in full.items():
        shards = split_tensor_parallel(key, tensor, 2)
        for r in range(2):
            assert torch.equal(shards[r], ranks[r]["params"][key]), f"{key} rank {r}"
        assert torch.equal(merge_tensor_parallel(key, [ranks[r]["params"][key] for r in range(2)]), tensor), key


@pytest.mark.parametrize("name", SHAPES)
def test_merged_weights_give_tp2_outputs_in_the_reference(saved, name):
    from megarecipe.model.reference import Llama

    _, ranks = load(saved, name)
    ref = Llama(ModelConfig(**SHAPES[name]), VOCAB).eval()
    ref.load_state_dict(
        {k: merge_tensor_parallel(k, [ranks[r]["params"][k] for r in range(2)]) for k in ranks[0]["params"]},
        strict=True,
    )
    tokens, targets = batch()
    logits = torch.cat([ranks[r]["logits"] for r in range(2)], dim=-1)  # each rank holds half the vocab
    with torch.no_grad():
        torch.testing.assert_close(ref(tokens), logits, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(
            ref.loss(tokens, targets, reduction="none").view(BATCH, SEQ), ranks[0]["loss"], atol=1e-4, rtol=1e-5
        )


@pytest.mark.parametrize("name", SHAPES)
def test_tp2_model_loaded_from_split_weights_computes_the_same(saved, name):
    _, ranks = load(saved, name)
    for r in range(2):
        torch.testing.assert_close(ranks[r]["loaded"]["logits"], ranks[r]["logits"], atol=0, rtol=0)
        torch.testing.assert_close(ranks[r]["loaded"]["loss"], ranks[r]["loss"], atol=0, rtol=0)


def main(argv: list[str]) -> int:
    worker(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
