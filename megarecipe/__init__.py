"""megarecipe: data-constrained LLM pre-training (megatron-core Llama under DeepSpeed ZeRO), ensembles,
distillation and scaling-law asymptotes.

The lazy-import boundary (the one place it is written down): an import sits inside a function only when it
loads the heavy stack - torch, DeepSpeed, megatron-core, transformers, lm_eval, matplotlib, scipy, numpy,
sentencepiece, tensorboard, wandb, datasets, pyarrow, tokenizers, zstandard, tqdm, and PyYAML where the module
does not load it already - or a project module that imports one of those at its top (model/, parallel/,
train/ but train/wandb_writer, data/dataset, data/meta, distill/cache, preflight, config/ for the tools that
need no YAML, analysis/plots, analysis/fit ...). That keeps a tool's `--help`, its one-line errors on bad input
and the launchers' checks fast and free of torch (tests/unit/test_layers.py). One project exception: the
launch backends (launch/pool.py, launch/slurm.py, launch/direct.py: multiprocessing, subprocess, sockets) load
only when a run starts - in launch/__init__.py, which most tools import, and in cli/distill.py and
cli/ensemble.py, whose `--help` they would slow by ~20 ms each.
Everything else - the standard library and the light project modules - is imported at the top of its module;
tests/unit/test_layers.py fails on a function-level stdlib import."""

import warnings as _warnings

__version__ = "0.1.0"

# The one place where warnings are silenced: known noise from megatron-core and torch on machines without
# Transformer Engine or Apex, each by its message (a regex matched at the start; no colons, the test suite
# passes them to pytest's filterwarnings too). Every other warning - a deprecation in the internals the CPU
# layer patches, say - still shows.
NOISY_WARNINGS = (
    r"Transformer Engine and Apex are not installed",
    r"Apex is not installed",
    r"`torch\.jit\.script_method` is deprecated",
    r"The following imports from `dynamic_context\.py`",
    r"The 'megatron\.core\.transformer\.custom_layers\.transformer_engine'",
    r"full scope is deprecated",
    r"MLP requires ffn_hidden_size",
    r".*tp_group is None, using default tp group",
    r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
)
for _message in NOISY_WARNINGS:
    _warnings.filterwarnings("ignore", message=_message)
