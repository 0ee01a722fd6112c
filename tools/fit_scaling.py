"""Scaling-law fits L(x) = A / x^alpha + E from run directories' TensorBoard events (or a table).

  python tools/fit_scaling.py runs/reg-* --over params --out reports/reg          # L(N), N in billions
  python tools/fit_scaling.py runs/ens-300m-* --over members --out reports/ens    # L(K) of ensembles
  python tools/fit_scaling.py --joint runs/ens-* --out reports/joint              # K-limit per N, then N-limit
  python tools/fit_scaling.py --data-efficiency --baseline runs/std-* --recipe runs/joint-* --out reports/eff
  python tools/fit_scaling.py --points table.csv --out reports/paper             # rows x,loss[,group]

Where several runs share x (a sweep) the best one is used. Writes OUT/report.md, fits.json, runs.csv, *.png.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from a checkout

from megarecipe.recipes.fit_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
