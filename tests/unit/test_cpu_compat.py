"""The CPU layer for megatron-core must leave torch's device contexts, and so Hugging Face loading, working."""

import subprocess
import sys

from tests.helpers import REPO, env

# Run in a fresh interpreter: cpu_compat.apply() patches torch for the whole process, and it has to run before
# transformers is imported, as it does when a trainer process later exports or scores a Hugging Face model.
_CODE = """
import sys
import torch
from megarecipe.parallel import cpu_compat

cpu_compat.apply()
with torch.device("meta"):
    made = {"zeros": torch.zeros(1), "ones": torch.ones(1), "empty": torch.empty(1), "full": torch.full((1,), 2.0),
            "tensor": torch.tensor([1.0]), "arange": torch.arange(2), "rand": torch.rand(1), "randn": torch.randn(1),
            "randint": torch.randint(3, (1,)), "as_tensor": torch.as_tensor([1.0])}
off_meta = sorted(name for name, t in made.items() if t.device.type != "meta")
assert not off_meta, f"under torch.device('meta') these made tensors elsewhere: {off_meta}"

from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=32)
saved = LlamaForCausalLM(config).eval()
saved.save_pretrained(sys.argv[1])
loaded = LlamaForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
want, got = dict(saved.named_buffers()), dict(loaded.named_buffers())
wrong = sorted(name for name in want if not torch.equal(want[name], got[name]))
assert not wrong, f"buffers differ after from_pretrained: {wrong}: {[got[n][:4].tolist() for n in wrong]}"
tokens = torch.randint(0, 64, (2, 16))
with torch.no_grad():
    diff = (saved(tokens).logits - loaded(tokens).logits).abs().max().item()
assert diff == 0.0, f"logits differ by {diff}"
"""


def test_cpu_layer_keeps_device_contexts_and_hf_non_persistent_buffers(tmp_path):
    """Regression: the factory wrappers once hid torch.tensor & co. from `with torch.device("meta")`, so
    transformers' from_pretrained skipped its meta-device init and left rotary inv_freq as uninitialised memory."""
    done = subprocess.run(
        [sys.executable, "-c", _CODE, str(tmp_path / "hf")],
        cwd=REPO,
        env=dict(env(), PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
