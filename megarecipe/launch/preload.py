"""What the warm-start forkserver imports once, before any run is forked from it (megarecipe/launch/warm.py).

Imports only: no thread may be started and no device touched here, since every run is a fork of this process.
OpenBLAS would start its thread pool when numpy loads, so it is held to one thread in the server (each run's
own environment decides torch's threads).
"""
import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("DS_ACCELERATOR", "cpu")   # warm starts are CPU-only; DeepSpeed picks its accelerator once

import deepspeed  # noqa: E402,F401
import megatron.core.models.gpt  # noqa: E402,F401
import torch  # noqa: E402,F401
import torch.utils.tensorboard  # noqa: E402,F401

import megarecipe.cli.train  # noqa: E402,F401
import megarecipe.train.checkpoint  # noqa: E402,F401
import megarecipe.train.loop  # noqa: E402,F401
