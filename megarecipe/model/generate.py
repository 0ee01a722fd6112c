"""Sampling sequences from plain-PyTorch Llamas (megarecipe/model/reference.py), one model or an ensemble.

The next-token distribution is the softmax of the members' mean logits (the ensemble's, as the scorer and the
teacher average them) over the tokenizer's columns only, divided by the temperature, optionally cut to its top-p
nucleus. Draws come from one torch.Generator, one per step for the whole batch, so a batch is a pure function of
(prompts, weights, generator seed); the KV cache changes the arithmetic's order only, not the draws.
"""

from __future__ import annotations

import torch

from megarecipe.model.reference import KVCache


def next_distribution(
    logits: torch.Tensor, temperature: float, top_p: float | None, top_k: int | None = None
) -> torch.Tensor:
    """logits [b, V] -> probabilities [b, V] (fp32) at `temperature`, zero outside the k most likely tokens and
    then outside the top-p nucleus."""
    logits = logits.float()
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is None or top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more likely tokens
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the most likely token always stays
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


@torch.no_grad()
def generate(
    models: list,
    prompt: torch.Tensor,
    steps: int,
    vocab: int,
    temperature: float = 1.0,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    greedy: bool = False,
    top_k: int | None = None,
) -> torch.Tensor:
    """prompt [b, p] -> [b, p + steps]: the prompt followed by `steps` drawn tokens, each in [0, vocab)."""
    tokens = prompt
    caches = [KVCache(len(m.decoder.layers)) if use_cache else None for m in models]
    new = prompt
    for _ in range(steps):
        total = None
        for model, cache in zip(models, caches, strict=True):
            logits = model(new if use_cache else tokens, cache)[:, -1, :vocab].float()
            total = logits if total is None else total + logits
        logits = total / len(models)
        if greedy:
            draw = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = next_distribution(logits, temperature, top_p, top_k)
            draw = torch.multinomial(probs.cpu(), 1, generator=generator).to(tokens.device)
        tokens = torch.cat([tokens, draw], dim=1)
        new = draw
    return tokens
