"""The layer kernels side by side (model.kernels = local, sdpa, and te where Transformer Engine is installed).

    python benchmarks/kernels_bench.py --seq 1024              # forward + backward of the megatron-core model
    python benchmarks/kernels_bench.py --train 300m --steps 30 # the real trainer, 1 process: tokens/s and MFU

The first form runs in this one process: median forward + backward time of one micro-batch, and the activation
bytes autograd keeps for backward (every saved tensor's storage counted once, weights left out) next to what
tools/zero_plan.py plans for them. The second runs the trainer on a preset per kernel choice and reads its own
perf/tokens_per_sec and perf/mfu (on a GPU: bf16, the figure the 300M preset's MFU target is stated in).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_common import add_shape_args, ensure_data, publish, trainer_env

from megarecipe.system import free_port

REPO = Path(__file__).resolve().parent.parent
VOCAB = 2048


def kernel_choices(asked: str | None) -> list[str]:
    if asked:
        return asked.split(",")
    cuda = torch.cuda.is_available()
    return ["local", "sdpa"] + (["te"] if cuda and importlib.util.find_spec("transformer_engine") else [])


def forward_backward(model, tokens, targets) -> int:
    """One forward and backward; the activation bytes kept in between."""
    from megarecipe.parallel.memory import SavedActivations

    positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0).expand_as(tokens)
    with SavedActivations(model.parameters()) as saved:
        loss = model(tokens, positions, None, labels=targets).float().mean()
    loss.backward()
    return saved.bytes


def in_process(a, kernels: list[str]) -> list[str]:
    from megarecipe.parallel import cpu_compat

    cpu_compat.apply()
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    from megarecipe.config import ModelConfig
    from megarecipe.model.llama import build_model
    from megarecipe.plan.memory import activations

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    ps.initialize_model_parallel()
    tensor_parallel.model_parallel_cuda_manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    tokens, targets = (torch.randint(0, VOCAB, (a.micro, a.seq), generator=gen).to(device) for _ in range(2))

    rows = [
        "| kernels | forward + backward, ms | vs local | activations kept, MiB | planned, MiB |",
        "|---|---|---|---|---|",
    ]
    base = None
    for k in kernels:
        m = ModelConfig(
            num_layers=a.layers,
            hidden_size=a.hidden,
            ffn_hidden_size=a.ffn,
            num_attention_heads=a.heads,
            num_query_groups=a.kv_heads,
            seq_len=a.seq,
            kernels=k,
        )
        model = build_model(m, VOCAB, kernels=k).to(device)
        kept = forward_backward(model, tokens, targets)
        planned = activations(m, VOCAB, a.micro, 1, 1, 0, 1, "none", bf16=False, gpu=cuda)
        times = []
        for _ in range(a.steps):
            model.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            forward_backward(model, tokens, targets)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        ms = 1000 * statistics.median(times[a.warmup :])
        base = base or ms
        rows.append(f"| {k} | {ms:,.1f} | {base / ms:.2f}x | {kept / 2**20:,.1f} | {planned / 2**20:,.1f} |")
        del model
    ps.destroy_model_parallel()
    dist.destroy_process_group()
    return rows


def trainer(a, kernels: list[str]) -> list[str]:
    from megarecipe.analysis.runs import event_dir, read_scalars

    ensure_data(a.data)
    rows = ["| kernels | tokens/s | vs local | MFU |", "|---|---|---|---|"]
    base = None
    with tempfile.TemporaryDirectory() as work:
        for k in kernels:
            run_dir = os.path.join(work, k)
            cmd = [
                str(Path(sys.executable).parent / "torchrun"),
                "--nproc_per_node",
                "1",
                "--master_port",
                str(free_port()),
                "-m",
                "megarecipe.cli.train",
                a.train,
                f"data.dir={a.data}",
                "data.train_tokens=null",
                "data.val_tokens=null",
                f"run.dir={run_dir}",
                f"model.kernels={k}",
                f"train.stop_after={a.steps}",
                "train.eval_every=1000000",
                "train.progress=false",
                f"train.micro_batch_size={a.micro}",
                f"train.global_batch_size={a.batch}",
                *a.override,
            ]
            result = subprocess.run(cmd, cwd=REPO, env=trainer_env(), capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"model.kernels={k} failed:\n{result.stderr[-3000:]}")
            scalars = read_scalars(event_dir(run_dir))
            steps = sorted(scalars["perf/tokens_per_sec"])[a.warmup :]
            rate = statistics.median(scalars["perf/tokens_per_sec"][s] for s in steps)
            mfu = statistics.median(scalars["perf/mfu"][s] for s in steps) if "perf/mfu" in scalars else None
            base = base or rate
            rows.append(f"| {k} | {rate:,.0f} | {rate / base:.2f}x | {'-' if mfu is None else f'{mfu:.1%}'} |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_args(p, steps=8)
    p.add_argument("--kernels", help="comma list (default: local,sdpa and te where available)")
    p.add_argument("--train", metavar="PRESET", help="run the trainer on this preset or config instead")
    p.add_argument("override", nargs="*", help="key=value overrides for --train")
    a = p.parse_args()
    os.chdir(REPO)
    kernels = kernel_choices(a.kernels)
    rows = trainer(a, kernels) if a.train else in_process(a, kernels)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    command = "python benchmarks/kernels_bench.py " + " ".join(sys.argv[1:])
    what = (
        f"preset {a.train}, global batch {a.batch} (micro {a.micro})"
        if a.train
        else (
            f"Llama {a.layers} layers, hidden {a.hidden}, ffn {a.ffn}, heads {a.heads}/{a.kv_heads}, seq {a.seq}, "
            f"micro-batch {a.micro}, vocab {VOCAB}, fp32"
        )
    )
    table = "\n".join([f"`{command.strip()}` — {device}; {what}; median of steps {a.warmup + 1}-{a.steps}.", "", *rows])
    publish(table, "Layer kernels", a.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
