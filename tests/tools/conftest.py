import os

import pytest


def write_run(path, facts=None, val=None, ensemble=None, extra=None, tb=True, purge_step=None):
    """Event files as the trainer writes them, with torch's own SummaryWriter (no code of ours involved).

    facts: run/<name> -> value at step 0; val: step -> val/loss; ensemble: K -> ensemble/val_loss;
    extra: tag -> {step: value}.
    """
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=os.path.join(path, "tb") if tb else path, purge_step=purge_step)
    for name, v in (facts or {}).items():
        w.add_scalar(f"run/{name}", v, 0)
    w.add_text("run/config", "model: {}", 0)
    for step, v in (val or {}).items():
        w.add_scalar("val/loss", v, step)
        w.add_scalar("train/loss", v + 0.1, step)
    for k, v in (ensemble or {}).items():
        w.add_scalar("ensemble/val_loss", v, k)
    for tag, series in (extra or {}).items():
        for step, v in series.items():
            w.add_scalar(tag, v, step)
    w.close()
    return str(path)


def llama_params(hidden, mlp, heads, kv_heads, layers, vocab=128256):
    """Total parameters of the paper's Llama shapes: untied embeddings, no biases, RMSNorm weights."""
    head_dim = hidden // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim
    per_layer = attention + 3 * hidden * mlp + 2 * hidden
    return layers * per_layer + hidden + 2 * vocab * hidden


PAPER_SIZES = {  # name -> total params, from the shapes in shared/paper-notes.md
    "150m": llama_params(512, 1792, 8, 8, 6),
    "300m": llama_params(768, 2688, 12, 12, 12),
    "600m": llama_params(1024, 3584, 16, 8, 24),
    "1.4b": llama_params(2048, 7168, 16, 8, 16),
}
PAPER_K_ASYMPTOTES = {"150m": 3.4949, "300m": 3.2730, "600m": 3.2122, "1.4b": 3.1740}


@pytest.fixture
def make_run():
    return write_run
