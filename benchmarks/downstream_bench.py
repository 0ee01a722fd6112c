"""Items/s of downstream evaluation on the CPU: lm-eval with the "megarecipe" model type on a run's export
against lm-eval's own `hf` model on the Hugging Face export of the same weights, same tasks and items.

    python benchmarks/downstream_bench.py                       # arc_easy, piqa, sciq; 100 items each
    python benchmarks/downstream_bench.py --tasks hellaswag --limit 200 --hidden 256 --layers 4

The model is the tiny config's shape with random weights (speed and agreement do not depend on training).
It also checks that both paths agree item by item: the largest log-likelihood gap and the accuracies.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_export(root: str, a) -> str:
    from megarecipe.config import Config, ModelConfig
    from megarecipe.data.corpus import sotu_files
    from megarecipe.data.tokenizer import train_tokenizer
    from megarecipe.model.export import write_export
    from megarecipe.model.reference import Llama

    tokenizer = train_tokenizer(sotu_files()[::4], os.path.join(root, "tok"), a.vocab)
    cfg = Config()
    cfg.model = ModelConfig(
        num_layers=a.layers,
        hidden_size=a.hidden,
        ffn_hidden_size=a.ffn,
        num_attention_heads=a.heads,
        num_query_groups=a.kv_heads,
        seq_len=a.seq,
    )
    torch.manual_seed(0)
    vocab = -(-a.vocab // 128) * 128
    write_export(os.path.join(root, "run", "export"), Llama(cfg.model, vocab).state_dict(), cfg, vocab, tokenizer)
    return os.path.join(root, "run")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="arc_easy,piqa,sciq")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=2, help="interleaved repeats; the best of each is reported")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--ffn", type=int, default=352)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8000)
    a = p.parse_args()
    import lm_eval
    from lm_eval.tasks import TaskManager

    from megarecipe.analysis.lm_eval_model import MegarecipeLM
    from megarecipe.analysis.tasks import write_task_dir
    from megarecipe.model.hf import export_hf

    tasks = a.tasks.split(",")
    with tempfile.TemporaryDirectory() as root:
        run = make_export(root, a)
        hf_dir = export_hf(os.path.join(run, "export"), os.path.join(root, "hf"))
        manager = TaskManager(include_path=write_task_dir(os.path.join(root, "tasks"), tasks), include_defaults=False)
        common = dict(tasks=tasks, task_manager=manager, limit=a.limit, log_samples=True)
        cases = {
            "megarecipe": lambda: lm_eval.simple_evaluate(model=MegarecipeLM(run, batch_size=a.batch_size), **common),
            "hf": lambda: lm_eval.simple_evaluate(
                model="hf",
                model_args=f"pretrained={hf_dir},dtype=float32",
                device="cpu",
                batch_size=a.batch_size,
                **common,
            ),
        }
        best, cpu, outputs = {}, {}, {}
        for _ in range(a.rounds):
            for name, run_case in cases.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                outputs[name] = run_case()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
                cpu[name] = min(cpu.get(name, float("inf")), time.process_time() - start_cpu)
    items = sum(len(outputs["hf"]["samples"][t]) for t in tasks)
    gap, same_acc = 0.0, True
    for t in tasks:
        ours = sorted(outputs["megarecipe"]["samples"][t], key=lambda s: s["doc_id"])
        theirs = sorted(outputs["hf"]["samples"][t], key=lambda s: s["doc_id"])
        for x, y in zip(ours, theirs, strict=True):
            gap = max(
                gap,
                max(
                    abs(r[0][0] - q[0][0]) / max(1.0, abs(q[0][0])) for r, q in zip(x["resps"], y["resps"], strict=True)
                ),
            )
        for metric in ("acc,none", "acc_norm,none"):
            same_acc &= outputs["megarecipe"]["results"][t].get(metric) == outputs["hf"]["results"][t].get(metric)
    print(
        f"{items} items ({', '.join(tasks)}; limit {a.limit}), model {a.layers}x{a.hidden}, seq {a.seq}, "
        f"vocab {a.vocab}, batch {a.batch_size}, {torch.get_num_threads()} threads; best of {a.rounds}"
    )
    print("| model type | wall s | items/s | CPU s | items per CPU s |\n|---|---|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.1f} | {items / seconds:.1f} | {cpu[name]:.1f} | {items / cpu[name]:.1f} |")
    print(
        f"largest per-choice log-likelihood gap {gap:.2e} (relative to max(1, |ll|)); accuracies identical: {same_acc}"
    )
    return 0 if gap < 1e-5 and same_acc else 1


if __name__ == "__main__":
    sys.exit(main())
