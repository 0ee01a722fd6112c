"""Sample text from a finished run, an export dir or an ensemble (its members' logits averaged), offline.

  python tools/generate.py runs/300m-best --prompt "The President said" --max-new-tokens 64
  python tools/generate.py runs/ens-300m --prompt "Once upon" --temperature 0.8 --top-k 50 --top-p 0.95 --seed 1
  python tools/generate.py runs/300m-best/export --prompt "To be" --temperature 0      # greedy

Each prompt starts a new document (after the EOS that separates documents in training) and continues until EOS
or --max-new-tokens, within the model's model.seq_len. Decoding keeps a KV cache; the same seed gives the same
text.
"""

from __future__ import annotations

import argparse
import os

from megarecipe import ensembledir, rundir
from megarecipe.cli.common import Parser, run
from megarecipe.data.tokenizer import find_tokenizer, load_tokenizer
from megarecipe.errors import UserError
from megarecipe.rundir import RunDir
from megarecipe.system import check_device, has_cuda


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a finished run (RUN/export), an export dir, or an ensemble dir (ensemble.json)")
    p.add_argument("--prompt", action="append", required=True, help="text to continue; repeat for several")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (the most likely token)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    p.add_argument("--top-p", type=float, default=None, help="sample within the top-p nucleus only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when there is one)")
    args = p.parse_args(argv)
    return run(lambda: _print_texts(args))


def _print_texts(args) -> int:
    for text in generate_texts(args):
        print(text, flush=True)
    return 0


def exports_of(path: str) -> list[str]:
    """The export dirs behind `path`: itself, RUN/export, or each member's of an ensemble."""
    from megarecipe.distill.teacher import members

    if os.path.isfile(os.path.join(path, rundir.MODEL_JSON)):
        return [path]
    if not (os.path.exists(RunDir(path).export) or ensembledir.is_ensemble(path)):
        raise UserError(
            f"{path}: no export/ (a finished run), model.json (an export) or ensemble.json (an "
            f"ensemble); give one of those, or export a stopped run first (tools/export_hf.py --tag)"
        )
    return [m.export for m in members(path)]


def generate_texts(args) -> list[str]:
    import torch

    from megarecipe.model.export import load_export
    from megarecipe.model.generate import generate

    for name, ok in (
        ("--max-new-tokens", args.max_new_tokens >= 1),
        ("--temperature", args.temperature >= 0),
        ("--top-k", args.top_k is None or args.top_k >= 1),
        ("--top-p", args.top_p is None or 0 < args.top_p <= 1),
        ("--seed", args.seed >= 0),
    ):
        if not ok:
            raise UserError(
                f"{name} is out of range (max-new-tokens >= 1, temperature >= 0, top-k >= 1, "
                f"0 < top-p <= 1, seed >= 0); fix the option"
            )
    exports = exports_of(args.model)
    tokenizers = {find_tokenizer(e) for e in exports}
    if None in tokenizers:
        raise UserError(
            f"{args.model}: an export has no tokenizer.model or tokenizer.json; re-export the run from its data dir"
        )
    loaded = [load_export(e) for e in exports]
    if len({info["tokenizer_sha256"] for _, _, info in loaded}) != 1:
        raise UserError(
            f"{args.model}: its members were trained with different tokenizers; generate from members of one data dir"
        )
    seq_len = min(cfg.model.seq_len for _, cfg, _ in loaded)
    sp = load_tokenizer(os.path.dirname(sorted(tokenizers)[0]))  # the folder: a tokenizer.json's EOS is beside it
    device = torch.device(check_device(args.device) or ("cuda" if has_cuda() else "cpu"))
    models = [model.to(device) for model, _, _ in loaded]
    generator = torch.Generator().manual_seed(args.seed)
    texts = []
    for prompt in args.prompt:
        ids = [sp.eos_id, *sp.encode(prompt)]
        steps = min(args.max_new_tokens, seq_len - len(ids))
        if steps < 1:
            raise UserError(
                f"--prompt {prompt[:40]!r}: {len(ids)} tokens leave no room in model.seq_len={seq_len}; shorten it"
            )
        out = generate(
            models,
            torch.tensor([ids], device=device),
            steps,
            sp.vocab_size,
            temperature=args.temperature or 1.0,
            top_p=args.top_p,
            top_k=args.top_k,
            generator=generator,
            greedy=args.temperature == 0,
        )
        new = out[0, len(ids) :].tolist()
        if sp.eos_id in new:
            new = new[: new.index(sp.eos_id)]
        texts.append(_join(prompt, ids[1:], new, sp))
    return texts


def _join(prompt: str, prompt_ids: list[int], new: list[int], sp) -> str:
    """The prompt and its continuation: decoding `new` alone would drop the word boundary its first piece starts
    with, so the continuation is what decoding prompt + new adds to decoding the prompt."""
    if not new:
        return prompt
    whole, base = sp.decode(prompt_ids + new), sp.decode(prompt_ids)
    return prompt + (whole[len(base) :] if whole.startswith(base) else sp.decode(new))
