"""The trainer: the loop (loop.py) and the parts it drives, each owning its own cadence: the step (step.py), the
losses (objectives.py), held-out evaluation (validation.py), checkpoints (checkpoint.py) and the event writer
(metrics.py). The command is megarecipe/cli/train.py; `python -m megarecipe.train` runs the same command.

Importing this package is cheap: torch, DeepSpeed and megatron-core are imported by the modules that use them.
"""
