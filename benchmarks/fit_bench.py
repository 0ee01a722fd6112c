"""Time scaling-law fits: four curves with 200 bootstrap resamples each (target: under 5 s on 2 CPU cores).

python benchmarks/fit_bench.py [--resamples 200] [--repeats 3]
"""

import argparse
import time

import numpy as np

from megarecipe.analysis.fit import Point, fit_power_law, joint_asymptote


def curves(seed=0):
    """Four ensemble curves over K = 1..5, shaped like the paper's per-size ensembles, with noise."""
    rng = np.random.default_rng(seed)
    k = np.arange(1.0, 6.0)
    out = {}
    for i, (n, e) in enumerate(zip((0.154, 0.300, 0.602, 1.431), (3.4949, 3.2730, 3.2122, 3.1740), strict=True)):
        out[n] = (k, (0.3 - 0.03 * i) / k ** (0.8 + 0.1 * i) + e + rng.normal(0, 0.003, k.size))
    return out


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data, b = curves(), args.resamples
    fit_power_law(*data[0.154], n_boot=10)  # imports and first-call costs out of the timing

    def four(loss):
        return lambda: [fit_power_law(x, y, loss=loss, n_boot=b, seed=i) for i, (x, y) in enumerate(data.values())]

    def joint():
        curves = {n: [Point(float(k), float(v)) for k, v in zip(x, y, strict=True)] for n, (x, y) in data.items()}
        joint_asymptote(curves, n_boot=b)

    print(f"{'case':44s} {'best s':>8s} {'median s':>9s}")
    for name, fn in (
        (f"4 curves x {b} resamples, least squares", four("lsq")),
        (f"4 curves x {b} resamples, Huber", four("huber")),
        (f"joint: 4 K-fits + N-fit, {b} resamples each", joint),
    ):
        best, med = timed(fn, args.repeats)
        print(f"{name:44s} {best:8.3f} {med:9.3f}")


if __name__ == "__main__":
    main()
