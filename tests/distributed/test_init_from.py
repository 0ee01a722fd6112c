"""model.init_from under tensor and pipeline parallelism: the first step's loss is the Hugging Face model's."""

import math
import os

import pytest
import torch

from megarecipe.data.dataset import TokenDataset
from tests.helpers import losses, train
from tests.unit.test_init_from import make_hf_llama, transformers

pytestmark = pytest.mark.slow


def test_first_loss_is_the_hf_models_at_tp2_pp2(tiny_data, tmp_path):
    hf_dir = make_hf_llama(tmp_path / "llama", os.path.join(tiny_data, "tokenizer.model"), seed=4)
    run_dir, _ = train(
        tmp_path,
        "cpt",
        4,
        tiny_data,
        f"model.init_from={hf_dir}",
        "parallel.tp=2",
        "parallel.pp=2",
        "train.stop_after=1",
        "train.eval_every=1000",
    )
    # the batch of step 1 as the trainer draws it (one data-parallel rank), scored by transformers
    data = TokenDataset(tiny_data, 64, 20000, seed=1234)
    tokens, targets = (torch.as_tensor(t) for t in data.windows(data.batch_ids(0, 16)))
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(tokens).logits
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()
    assert losses(run_dir) == [pytest.approx(want, abs=1e-4)]
    # far from the ~ln(V) of the trainer's own small-std initialisation: equal only if the weights were loaded
    assert abs(want - math.log(2048)) > 0.2
