"""The run configuration's schema: nested dataclasses with their defaults, and the Layout the checks derive.
Loading is megarecipe/config/load.py, the checks layout.py; batch sizes are stated once here and DeepSpeed's
batch fields are derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megarecipe.errors import ConfigError

__all__ = ["ConfigError"]


@dataclass
class RunConfig:
    dir: str = "runs/default"
    seed: int = 1234  # model init and data order; the data subset never depends on it
    resume: bool = False  # continue from dir/checkpoints if a checkpoint is there
    resume_from: Optional[str] = None  # a checkpoint tag (stepNNNNNNNN) to resume from instead of `latest`


@dataclass
class DataConfig:
    dir: str = "data/default"
    train_tokens: Optional[int] = None  # unique-token budget D; None = every prepared training token
    val_tokens: Optional[int] = None  # fixed prefix of the held-out split; None = all of it
    tokenizer: Optional[str] = None  # if set, the data dir must have been made with this tokenizer
    # DIR:RATIO entries, e.g. [data/dclm:0.1,data/synth:0.9]: train on several data dirs at these ratios. The first
    # is the real data: data.dir becomes it, its tokens are the budget D and val/loss; the others fill up each epoch.
    mix: Optional[list[str]] = None


@dataclass
class ModelConfig:
    num_layers: int = 2
    hidden_size: int = 128
    ffn_hidden_size: int = 352
    num_attention_heads: int = 4
    num_query_groups: int = 2  # key/value heads (grouped-query attention)
    seq_len: int = 128
    vocab_size: Optional[int] = None  # None = the tokenizer's, padded to a multiple of 128 * TP
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    recompute: str = "none"  # activation recomputation: none, selective (attention) or full (per layer)
    kernels: str = "auto"  # layer implementation: auto, local, sdpa or te (model/llama.py)
    # a local Hugging Face Llama dir: its config.json sets the shape above (and vocab_size), its weights are the
    # model at step 0, and data.dir must be tokenized with its tokenizer.json or tokenizer.model (continued
    # pre-training)
    init_from: Optional[str] = None


@dataclass
class OptimConfig:
    lr: float = 3e-3
    weight_decay: float = 0.1  # torch AdamW semantics: per-step decay is lr * weight_decay
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_frac: float = 0.01
    grad_clip: float = 1.0
    schedule: str = "cosine"  # after warm-up: cosine (the paper's) or wsd (stable, then a linear decay)
    min_lr_ratio: float = 0.0  # the LR the schedule ends at, as a fraction of optim.lr
    decay_frac: float = 0.2  # wsd only: the final fraction of the post-warm-up steps that decays


@dataclass
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    ds_config: str = "zero1"  # a name in ds_configs/ or a path to a DeepSpeed JSON


@dataclass
class TrainConfig:
    epochs: int = 1
    global_batch_size: int = 16  # sequences per optimizer step, all ranks together
    micro_batch_size: int = 8  # sequences per forward on one data-parallel rank
    eval_every: int = 100  # steps; the last step is always evaluated
    eval_batch_size: int = 8
    checkpoint_every: int = 0  # steps; 0 = only at the end
    keep_checkpoints: int = 2
    stop_after: Optional[int] = None  # stop (with a checkpoint) after this many steps; the schedule is unchanged
    on_nonfinite: str = "stop"  # "stop" names the step and exits; "skip" drops the batch
    precision: str = "auto"  # auto = bf16 on GPU, fp32 on CPU
    log_every: int = 1  # steps between log lines (rank 0, stdout) and TensorBoard train scalars
    progress: bool = True  # a tqdm bar as well, when stderr is a terminal


@dataclass
class DistillConfig:
    teacher: Optional[str] = None  # a finished run (RUN/export) or an ensemble dir (ensemble.json); null = none
    alpha: float = 0.9  # weight of the teacher's term; 1 - alpha weighs the real next token
    temperature: float = 1.0


@dataclass
class LoggingConfig:
    wandb: bool = False  # also log to Weights & Biases (pip install wandb); TensorBoard always
    wandb_project: str = "megarecipe"
    wandb_entity: Optional[str] = None  # a W&B team or user; None = the logged-in user's default


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
