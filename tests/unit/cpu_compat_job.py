"""The body of tests/unit/test_cpu_compat.py, run in a process of its own (a warm child of the preloaded server,
which has imported torch and megarecipe but not transformers): cpu_compat.apply() patches torch for the whole
process, and it has to run before transformers is imported, as it does when a trainer process later exports or
scores a Hugging Face model. `main([DIR])` returns 0, or raises AssertionError naming what differs."""

import sys

import torch

from megarecipe.parallel import cpu_compat

FACTORIES = {
    "zeros": lambda: torch.zeros(1),
    "ones": lambda: torch.ones(1),
    "empty": lambda: torch.empty(1),
    "full": lambda: torch.full((1,), 2.0),
    "tensor": lambda: torch.tensor([1.0]),
    "arange": lambda: torch.arange(2),
    "rand": lambda: torch.rand(1),
    "randn": lambda: torch.randn(1),
    "randint": lambda: torch.randint(3, (1,)),
    "as_tensor": lambda: torch.as_tensor([1.0]),
}


def main(argv: list[str]) -> int:
    assert "transformers" not in sys.modules, "transformers was imported before cpu_compat.apply()"
    cpu_compat.apply()
    with torch.device("meta"):
        made = {name: make() for name, make in FACTORIES.items()}
    off_meta = sorted(name for name, t in made.items() if t.device.type != "meta")
    assert not off_meta, f"under torch.device('meta') these made tensors elsewhere: {off_meta}"

    from transformers import LlamaConfig, LlamaForCausalLM  # after apply(), as in a trainer process

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    saved = LlamaForCausalLM(config).eval()
    saved.save_pretrained(argv[0])
    loaded = LlamaForCausalLM.from_pretrained(argv[0], dtype=torch.float32).eval()
    want, got = dict(saved.named_buffers()), dict(loaded.named_buffers())
    wrong = sorted(name for name in want if not torch.equal(want[name], got[name]))
    assert not wrong, f"buffers differ after from_pretrained: {wrong}: {[got[n][:4].tolist() for n in wrong]}"
    tokens = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        diff = (saved(tokens).logits - loaded(tokens).logits).abs().max().item()
    assert diff == 0.0, f"logits differ by {diff}"
    return 0
