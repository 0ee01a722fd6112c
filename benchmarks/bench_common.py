"""What the training benchmarks share: the model-shape options, their trainer overrides, the data dir."""

import os


def add_shape_args(p, steps: int) -> None:
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--ffn", type=int, default=704)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data", default="data/default", help="a prepared data dir (the embedded corpus by default)")
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")


def shape_overrides(a, layers: int | None = None) -> list[str]:
    return [
        f"model.num_layers={a.layers if layers is None else layers}",
        f"model.hidden_size={a.hidden}",
        f"model.ffn_hidden_size={a.ffn}",
        f"model.num_attention_heads={a.heads}",
        f"model.num_query_groups={a.kv_heads}",
        f"model.seq_len={a.seq}",
    ]


def trainer_env(**extra: str) -> dict:
    """The environment a benchmark's trainer runs in: DeepSpeed on the CPU where there is no GPU, and its own
    choice on a GPU (an empty DS_ACCELERATOR is no "unset" to DeepSpeed: it refuses the value)."""
    import torch

    env = dict(os.environ, **extra)
    if torch.cuda.is_available():
        if not env.get("DS_ACCELERATOR"):
            env.pop("DS_ACCELERATOR", None)
    else:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def ensure_data(data_dir: str) -> None:
    if not os.path.isfile(os.path.join(data_dir, "meta.json")):
        from megarecipe.data.corpus import prepare_default

        prepare_default(data_dir)


def publish(table: str, heading: str, write: bool) -> None:
    """Print the table; with --write also append it to benchmarks/RESULTS.md under `heading (date)`."""
    import time
    from pathlib import Path

    print(table)
    if write:
        with open(Path(__file__).resolve().parent / "RESULTS.md", "a") as f:
            f.write(f"\n## {heading} ({time.strftime('%Y-%m-%d')})\n\n{table}\n")
