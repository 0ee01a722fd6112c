"""The held-out loss during training: fixed microbatches, evaluated at the validator's own cadence."""

from __future__ import annotations

from megarecipe.data.dataset import IGNORE_INDEX, validation_batches
from megarecipe.train.objectives import Microbatch


class Validator:
    """`val/loss` every `every` steps and at the last step: the exact per-token mean over the same held-out
    tokens for every run on a data dir, whatever the batch or data-parallel size."""

    def __init__(
        self,
        stepper,
        data_dir: str,
        seq_len: int,
        batch_size: int,
        max_tokens: int | None,
        every: int,
        total_steps: int,
        dp_rank: int,
        dp_size: int,
    ):
        self.stepper, self.every, self.total = stepper, every, total_steps
        # every data-parallel rank gets the same number of microbatches (weight 0 marks padding), so ZeRO-3's
        # per-forward gathers stay in step
        self.microbatches = [
            Microbatch(x, y.clamp(min=0), (y != IGNORE_INDEX).float())
            for x, y in validation_batches(
                data_dir, seq_len, batch_size * dp_size, max_tokens=max_tokens, dp_rank=dp_rank, dp_size=dp_size
            )
        ]
        self.last: float | None = None

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.total

    def run(self) -> float:
        self.last = self.stepper.evaluate(self.microbatches)
        return self.last
