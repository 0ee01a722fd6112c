"""The trainer with a fault injected: `python -m tests.distributed.inject_nan STEP CONFIG key=value ...` makes the
training loss NaN (and so every gradient) at one step, to test the non-finite guard. The injection lives here, not
in the trainer; main() patches this process only (a warm run is a fresh fork)."""

import sys


def main(argv: list[str] | None = None) -> int:
    from megarecipe.cli.train import main as train
    from megarecipe.train import objectives, step

    argv = list(sys.argv[1:] if argv is None else argv)
    bad_step = int(argv.pop(0))
    calls = {"steps": 0}
    train_step, cross_entropy = step.Stepper.train_step, objectives.CrossEntropy.__call__

    def counting_train_step(self, *args, **kwargs):
        calls["steps"] += 1  # the test runs never resume: call n is step n
        return train_step(self, *args, **kwargs)

    def poisoned_cross_entropy(self, *args, **kwargs):
        loss, metrics = cross_entropy(self, *args, **kwargs)
        if calls["steps"] == bad_step:
            loss = loss * float("nan")
            metrics = {"loss": loss.detach().clone()}
        return loss, metrics

    step.Stepper.train_step = counting_train_step
    objectives.CrossEntropy.__call__ = poisoned_cross_entropy
    return train(argv)


if __name__ == "__main__":
    sys.exit(main())
