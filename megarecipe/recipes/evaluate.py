"""Held-out loss of exported models, without DeepSpeed: the same tokens the trainer's val/loss uses."""
from __future__ import annotations

import torch

from megarecipe.data.dataset import IGNORE_INDEX, validation_batches


@torch.no_grad()
def validation_loss(model, data_dir: str, seq_len: int, max_tokens: int | None = None, batch_size: int = 8,
                    device="cpu") -> float:
    """Mean per-token cross-entropy of `model` (tokens -> logits) over the data dir's held-out tokens."""
    total, count = 0.0, 0
    for tokens, targets in validation_batches(data_dir, seq_len, batch_size, max_tokens=max_tokens):
        logits = model(tokens.to(device)).float()
        losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(),
                                                   ignore_index=IGNORE_INDEX, reduction="sum")
        total += losses.item()
        count += int((targets != IGNORE_INDEX).sum())
    return total / count
