"""The first module the warm-start forkserver imports (megarecipe/launch/warm.py), before the training stack.

No thread may run and no device may be touched in that server, since every run is a fork of it. OpenBLAS would
start its thread pool when numpy loads, so it is held to one thread there (each run's own environment sets
torch's threads); DeepSpeed picks its accelerator once, on import, and warm starts are CPU-only.
"""

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("DS_ACCELERATOR", "cpu")
