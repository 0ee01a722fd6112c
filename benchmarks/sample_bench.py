"""Sampling speed of the plain-PyTorch Llama with and without the KV cache (tools/distill.py sample's loop)."""

import argparse
import time

import torch

from megarecipe.config import ModelConfig
from megarecipe.model.generate import generate
from megarecipe.model.reference import Llama


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--ffn", type=int, default=176)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    m = ModelConfig(
        num_layers=args.layers,
        hidden_size=args.hidden,
        ffn_hidden_size=args.ffn,
        num_attention_heads=4,
        num_query_groups=2,
        seq_len=args.seq,
    )
    torch.manual_seed(0)
    models = [Llama(m, args.vocab).eval()]
    prompt = torch.full((args.batch, 1), 2)
    for use_cache in (True, False):
        start = time.perf_counter()
        generate(
            models, prompt, args.seq - 1, args.vocab, generator=torch.Generator().manual_seed(1), use_cache=use_cache
        )
        rate = args.batch * (args.seq - 1) / (time.perf_counter() - start)
        print(f"{'with' if use_cache else 'without'} KV cache: {rate:.0f} tokens/s")


if __name__ == "__main__":
    main()
