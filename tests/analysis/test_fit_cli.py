import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import PAPER_K_ASYMPTOTES, PAPER_SIZES, write_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "fit_scaling.py")
TOKENS = 209715200


def load_tool():
    spec = importlib.util.spec_from_file_location("fit_scaling", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tool():
    return load_tool()


def cli(tool, *args):
    return tool.main(["--no-progress", *map(str, args)])


def facts(n, d=TOKENS, **kw):
    return dict(
        params=n,
        train_tokens=d,
        epochs=kw.get("epochs", 16),
        lr=kw.get("lr", 3e-3),
        weight_decay=kw.get("wd", 0.8),
        seed=kw.get("seed", 0),
        total_steps=800,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Synthetic run directories, written once per module by torch's SummaryWriter."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    for name, n in PAPER_SIZES.items():
        for lr, penalty in ((1e-3, 0.03), (3e-3, 0.0)):  # a sweep: lr 3e-3 is always the better run
            loss = 0.05 / (n / 1e9) ** 1.02 + 3.43 + penalty + rng.normal(0, 0.002)
            write_run(root / f"reg-{name}-lr{lr:g}", facts(n, lr=lr), val={400: loss + 0.3, 800: loss})
        for i, members in enumerate((5, 3)):  # two ensemble evaluations per size; the 5-member one is better
            E = PAPER_K_ASYMPTOTES[name] + 0.02 * i
            write_run(
                root / f"ens-{name}-{i}",
                facts(n, epochs=32, wd=0.4),
                ensemble={k: E + 0.25 / k**0.9 for k in range(1, members + 1)},
            )
    for d in (TOKENS, 2 * TOKENS, 4 * TOKENS, 8 * TOKENS):  # standard recipe: known data law
        for n, extra in ((PAPER_SIZES["150m"], 0.02), (PAPER_SIZES["300m"], 0.0)):
            write_run(
                root / f"std-{n}-{d}", facts(n, d, epochs=8, wd=0.1), val={800: 1.2 / (d / 1e9) ** 0.23 + 2.6 + extra}
            )
    write_run(root / "reg-broken", facts(int(2e8)), val={800: float("nan")})
    return root


def glob(root, pattern):
    import glob as g

    return sorted(g.glob(str(root / pattern)))


def load(out):
    with open(out / "fits.json") as f:
        return json.load(f)


def test_over_params_uses_the_best_run_per_size_and_leaves_out_broken_runs(tool, runs, tmp_path, capsys):
    out = tmp_path / "reg"
    assert cli(tool, *glob(runs, "reg-*"), "--over", "params", "--out", out) == 0
    fit = load(out)["fits"]["reg"]
    assert fit["E"] == pytest.approx(3.43, abs=0.02) and fit["alpha"] == pytest.approx(1.02, rel=0.2)
    assert [p["source"] for p in fit["points"]] == [f"reg-{n}-lr0.003" for n in PAPER_SIZES]
    assert len(fit["dropped"]) == 4 and fit["ci"]["E"][0] <= fit["E"] <= fit["ci"]["E"][1]
    assert [os.path.basename(p["path"]) for p in load(out)["left_out"]] == ["reg-broken"]
    for name in ("report.md", "fits.json", "runs.csv", "fit.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "reg-broken" in report and "**E**" in report and "reg-150m-lr0.001" in report
    io = capsys.readouterr()
    assert "reg-150m-lr0.003" in io.out and "left out" in io.err and "reg-broken" in io.err
    assert len((out / "runs.csv").read_text().splitlines()) == 1 + 8


def test_joint_reproduces_the_paper_asymptote_through_event_files(tool, runs, tmp_path, capsys):
    out = tmp_path / "joint"
    assert cli(tool, "--joint", *glob(runs, "ens-*"), "--bootstrap", 50, "--out", out) == 0
    data = load(out)
    stage1 = {f["N_billions"]: f["E"] for f in data["stage1"]}
    for name, n in PAPER_SIZES.items():
        assert stage1[n / 1e9] == pytest.approx(PAPER_K_ASYMPTOTES[name], abs=2e-4)  # best run per K chosen
    assert data["E"] == pytest.approx(3.17, abs=0.005)
    assert data["stage2"]["E"] == data["E"] and len(data["stage2"]["points"]) == 4
    assert (out / "joint.png").stat().st_size > 0
    assert "3.17" in capsys.readouterr().out
    assert "Stage 1" in (out / "report.md").read_text()


def test_over_members_fits_one_ensemble(tool, runs, tmp_path):
    out = tmp_path / "ens"
    assert cli(tool, *glob(runs, "ens-300m-*"), "--over", "members", "--out", out, "--bootstrap", 20) == 0
    fit = load(out)["fits"]["ens-300m"]
    assert fit["E"] == pytest.approx(PAPER_K_ASYMPTOTES["300m"], abs=2e-4)
    assert [p["x"] for p in fit["points"]] == [1, 2, 3, 4, 5]
    assert all(p["source"].startswith("ens-300m-0 ") for p in fit["points"])


def test_group_by_prefix_gives_one_curve_per_recipe(tool, runs, tmp_path, capsys):
    alt = [
        write_run(tmp_path / f"alt-{name}", facts(n), val={800: 0.1 / (n / 1e9) ** 0.5 + 3.3})
        for name, n in list(PAPER_SIZES.items())[:3]
    ]
    out = tmp_path / "both"
    assert cli(tool, *glob(runs, "reg-*"), *alt, "--over", "params", "--group-by", "prefix", "--out", out) == 0
    fits = load(out)["fits"]
    assert set(fits) == {"reg", "alt"}
    assert fits["alt"]["E"] == pytest.approx(3.3, abs=1e-3) and fits["reg"]["E"] == pytest.approx(3.43, abs=0.02)
    # a recipe with two sizes only cannot be fitted: the error names it
    assert cli(tool, *alt[:2], *glob(runs, "reg-*"), "--over", "params", "--group-by", "prefix", "--out", out) == 2
    assert "error: alt: need at least 3 distinct x" in capsys.readouterr().err


def test_data_efficiency_against_a_known_data_law(tool, runs, tmp_path, capsys):
    out = tmp_path / "eff"
    assert (
        cli(
            tool,
            "--data-efficiency",
            "--baseline",
            *glob(runs, "std-*"),
            "--recipe-loss",
            3.3,
            "--reference-tokens",
            TOKENS,
            "--out",
            out,
        )
        == 0
    )
    eff = load(out)["efficiency"]
    truth = (1.2 / (3.3 - 2.6)) ** (1 / 0.23) / (TOKENS / 1e9)
    assert eff["efficiency"] == pytest.approx(truth, rel=0.02)
    assert eff["baseline"]["E"] == pytest.approx(2.6, abs=0.01)
    assert all(p["source"].startswith(f"std-{PAPER_SIZES['300m']}-") for p in eff["baseline"]["points"])
    assert (out / "efficiency.png").stat().st_size > 0
    # with the recipe's own runs: the ensembles' joint asymptote, at their train_tokens
    out2 = tmp_path / "eff2"
    assert (
        cli(
            tool,
            "--data-efficiency",
            "--baseline",
            *glob(runs, "std-*"),
            "--recipe",
            *glob(runs, "ens-*"),
            "--bootstrap",
            40,
            "--out",
            out2,
        )
        == 0
    )
    data = load(out2)
    assert data["efficiency"]["recipe_loss"] == pytest.approx(3.17, abs=0.005)
    assert data["reference_from"] == "the recipe runs' train_tokens"
    lo, hi = data["efficiency"]["ci"]
    assert lo <= data["efficiency"]["efficiency"] <= hi


def test_points_table_from_the_paper(tool, tmp_path):
    table = tmp_path / "table.csv"
    rows = [f"{n / 1e9},{PAPER_K_ASYMPTOTES[name]},ensembles" for name, n in PAPER_SIZES.items()]
    rows += ["0.15,3.75,regularized", "0.3,3.62,regularized", "0.6,3.52,regularized", "1.4,3.47,regularized"]
    table.write_text("N_billions,loss,recipe\n# per-N K-asymptotes at 200M tokens\n" + "\n".join(rows) + "\n")
    out = tmp_path / "paper"
    assert cli(tool, "--points", table, "--out", out, "--bootstrap", 20) == 0
    fits = load(out)["fits"]
    assert fits["ensembles"]["E"] == pytest.approx(3.17, abs=0.005)
    assert set(fits) == {"ensembles", "regularized"} and load(out)["x"] == "N_billions"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--over", "params"], "no run directories given"),
        (["RUNS/reg-*"], "say what to fit"),
        (["--data-efficiency", "--baseline", "x"], "needs --recipe"),
        (["--points", "MISSING.csv"], "cannot read"),
        (["--points", "BAD.csv"], "line 3: expected x,loss"),
        (["RUNS/reg-150m-*", "RUNS/reg-300m-*", "--over", "params"], "need at least 3 distinct x values"),
        (["RUNS/reg-broken", "--over", "params"], "no usable runs"),
        (["--joint", "RUNS/ens-150m-*", "RUNS/reg-300m-*"], ">= 3 model sizes, got 1"),
        (["RUNS/std-*", "--over", "members"], "none of the runs can be fitted over members"),
    ],
)
def test_bad_inputs_print_one_error_line_and_exit_2(tool, runs, tmp_path, capsys, args, message):
    (tmp_path / "BAD.csv").write_text("x,loss\n1,3.5\n2,oops\n")
    expanded = []
    for a in args:
        if a.startswith("RUNS/"):
            expanded += glob(runs, a[5:])
        else:
            expanded.append(str(tmp_path / a) if a.endswith(".csv") else a)
    try:
        code = cli(tool, *expanded, "--out", tmp_path / "out")
    except SystemExit as e:  # argparse's own checks
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    last = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(last) == 1 and message in last[0], err
    assert "Traceback" not in err


def test_runs_as_a_script_and_fails_cleanly(runs, tmp_path):
    out = tmp_path / "script"
    ok = subprocess.run(
        [sys.executable, TOOL, *glob(runs, "reg-*"), "--over", "params", "--out", str(out), "--bootstrap", "20"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stderr
    assert (out / "report.md").exists() and "wrote" in ok.stdout
    bad = subprocess.run(
        [sys.executable, TOOL, *glob(runs, "reg-150m-*"), "--over", "params", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: reg-150m: ") and "need at least 3 distinct x" in last


def test_over_members_fits_each_model_size_apart(tool, runs, tmp_path):
    """Ensembles of two sizes: one L(K) each (merged, the better size's point at every K made one curve and the
    other size vanished)."""
    out = tmp_path / "two"
    assert (
        cli(
            tool,
            *glob(runs, "ens-150m-*"),
            *glob(runs, "ens-300m-*"),
            "--over",
            "members",
            "--out",
            out,
            "--bootstrap",
            0,
        )
        == 0
    )
    fits = load(out)["fits"]
    assert set(fits) == {"ens-150m", "ens-300m"}
    for name in ("150m", "300m"):
        assert fits[f"ens-{name}"]["E"] == pytest.approx(PAPER_K_ASYMPTOTES[name], abs=2e-4)


def test_runs_scored_on_other_held_out_tokens_are_not_fitted_together(tool, runs, tmp_path, capsys):
    import shutil

    from megarecipe.rundir import RunDir

    paths = []
    for i, src in enumerate(glob(runs, "reg-*-lr0.003")):
        dst = shutil.copytree(src, tmp_path / os.path.basename(src))
        val_tokens = 8192 if i == 2 else 4096  # one run evaluated on a longer held-out slice
        RunDir(str(dst)).update(status="finished", heldout={"data_sha256": "ab" * 32, "val_tokens": val_tokens})
        paths.append(dst)
    assert cli(tool, *paths, "--over", "params", "--out", tmp_path / "out") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "measured on different held-out tokens" in err[0] and "8192 val tokens" in err[0], err
    RunDir(str(paths[2])).update(heldout={"data_sha256": "ab" * 32, "val_tokens": 4096})
    assert cli(tool, *paths, "--over", "params", "--out", tmp_path / "out") == 0


def test_out_over_a_users_folder_is_refused_and_an_earlier_report_is_rewritten(tool, tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("x,loss\n" + "\n".join(f"{x},{3 + 1 / x}" for x in (1, 2, 4, 8)) + "\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes")
    assert cli(tool, "--points", table, "--out", mine, "--bootstrap", 5) == 2
    assert "holds no earlier fit report" in capsys.readouterr().err
    assert (mine / "report.md").read_text() == "my own notes"
    out = tmp_path / "fit"
    assert cli(tool, "--points", table, "--out", out, "--bootstrap", 5) == 0
    assert cli(tool, "--points", table, "--out", out, "--bootstrap", 5) == 0  # its own earlier output: rewritten
