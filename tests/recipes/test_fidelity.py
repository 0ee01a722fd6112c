"""The recipe's comparisons as the paper makes them, on run dirs written here (no training): the data law on the
best standard run over sizes at each budget and the paper's efficiency against a hand-computed case, paired
orderings, the member box on a synthetic objective, and a report whose numbers are those of its fits.json."""

import json
import os
import re

import numpy as np
import pytest

from megarecipe.analysis import recipe_fits, recipe_report
from megarecipe.analysis.recipe_plan import RecipePlan
from megarecipe.recipes import members, recipe_file
from megarecipe.recipes.recipe_file import Hyper
from megarecipe.rundir import RunDir
from tests.recipes.test_recipe import SLIVER

SIZES = {"a": 1e6, "b": 2e6, "c": 4e6, "d": 8e6}  # parameters
REF, OTHERS = 2_000_000, [1_000_000, 4_000_000, 8_000_000]  # unique tokens
LAW = (0.1, 0.3, 3.0)  # the standard recipe's best over sizes: A / D^alpha + E
REG = (5e-4, 1.0, 3.5)  # the regularized recipe over N at REF


def law(A, alpha, E, x):
    return A / x**alpha + E


def run(path, loss, params, **facts):
    RunDir(str(path)).update(
        status="finished",
        final={"val_loss": loss},
        facts={"params": int(params), "lr": 3e-3, "weight_decay": 0.1, "epochs": 8, **facts},
    )
    return str(path)


def ensemble(path, member_losses, by_k, params):
    os.makedirs(path, exist_ok=True)
    ms = [run(os.path.join(path, "members", f"seed{i}"), v, params) for i, v in enumerate(member_losses)]
    with open(os.path.join(path, "ensemble.json"), "w") as f:
        json.dump({"members": ms, "val_loss_by_k": by_k, "member_val_loss": member_losses}, f)
    return str(path)


def build(tmp_path, with_ensembles=True):
    """Every size at every budget; at each budget a different size is best (the standard recipe overfits)."""
    plan = {"by_budget": {}}
    for i, b in enumerate([REF, *OTHERS]):
        best = law(*LAW, b / 1e9)
        winner = list(SIZES)[(i + 1) % 4]
        std = {
            s: run(tmp_path / "standard" / f"{s}_D{b}", best + (0 if s == winner else 0.05 + 0.01 * j), n)
            for j, (s, n) in enumerate(SIZES.items())
        }
        plan["by_budget"][str(b)] = {"standard": std}
    reg = {s: run(tmp_path / "regularized" / s, law(*REG, n / 1e9), n, weight_decay=0.8) for s, n in SIZES.items()}
    plan["by_budget"][str(REF)]["regularized"] = reg
    if with_ensembles:  # E_N falls with N; members spread by seed (sd ~0.01)
        ens = {}
        for s, n in SIZES.items():
            e_n = law(2e-4, 1.0, 3.1, n / 1e9)  # 3.3 down to 3.125; the joint limit 3.1
            by_k = [law(0.15, 1.0, e_n, k) for k in range(1, 5)]
            spread = [by_k[0] + d for d in (0.0, 0.012, -0.008, 0.004)]
            ens[s] = ensemble(tmp_path / "ensembles" / s, spread, by_k, n)
        plan["by_budget"][str(REF)]["ensembles"] = ens
    plan["edges"] = {"regularized": {"d": ["WD high"]}}
    for k in ("standard", "regularized", "ensembles"):
        plan[k] = plan["by_budget"][str(REF)].get(k, {})
    return RecipePlan.from_dict(plan)


def recipe(bootstrap=200):
    return recipe_file.load(SLIVER, [f"budget={REF}", f"budgets={[1024, *OTHERS]}", f"bootstrap={bootstrap}"])


def test_efficiency_uses_the_best_standard_run_over_sizes_and_the_papers_denominator(tmp_path):
    plan = build(tmp_path, with_ensembles=False)
    fits, _ = recipe_fits.compute(str(tmp_path), recipe(0), plan)
    A, alpha, E = LAW
    assert fits.data_law["A"] == pytest.approx(A, rel=1e-3)
    assert fits.data_law["alpha"] == pytest.approx(alpha, rel=1e-3) and fits.data_law["E"] == pytest.approx(E, rel=1e-4)
    assert [p["loss"] for p in fits.data_law["points"]] == pytest.approx(
        [law(*LAW, b / 1e9) for b in sorted([REF, *OTHERS])]
    )  # the min over sizes, every budget
    assert fits.data_law["sizes"] == {str(REF): "b", "1000000": "c", "4000000": "d", "8000000": "a"}
    eff = fits.by_budget[str(REF)]["efficiency"]["regularized"]
    # by hand: D_base(L) = (A / (L - E))^(1 / alpha); the best standard loss at REF lies on the law, so its
    # D_base is REF itself; the regularized asymptote is REG's E
    by_hand = (A / (REG[2] - E)) ** (1 / alpha) / (REF / 1e9)
    assert by_hand == pytest.approx(2.3384, rel=1e-3)
    assert eff["efficiency"] == pytest.approx(by_hand, rel=2e-3)
    assert eff["reference_loss"] == pytest.approx(law(*LAW, REF / 1e9))


def test_the_denominator_is_the_measured_best_run_not_the_laws_value(tmp_path):
    """With the best standard run at REF off the law, efficiency divides by D_base of that run's loss."""
    plan = build(tmp_path, with_ensembles=False)
    best = min(plan.by_budget[str(REF)]["standard"].values(), key=recipe_fits.run_loss)
    RunDir(best).update(final={"val_loss": recipe_fits.run_loss(best) - 0.02})
    fits, _ = recipe_fits.compute(str(tmp_path), recipe(0), plan)
    f, eff = fits.data_law, fits.by_budget[str(REF)]["efficiency"]["regularized"]
    inv = lambda L: (f["A"] / (L - f["E"])) ** (1 / f["alpha"])  # noqa: E731
    assert eff["efficiency"] == pytest.approx(inv(REG[2]) / inv(recipe_fits.run_loss(best)), rel=1e-9)
    assert abs(eff["efficiency"] - inv(REG[2]) / inv(law(f["A"], f["alpha"], f["E"], REF / 1e9))) > 0.05


def test_no_standard_asymptote_and_orderings_carry_paired_probabilities(tmp_path):
    plan = build(tmp_path)
    fits, _ = recipe_fits.compute(str(tmp_path), recipe(), plan)
    assert "standard" not in fits.by_budget[str(REF)] and fits.seed_sigma > 0
    best = fits.by_budget[str(REF)]["best_standard"]
    assert best["size"] == "b" and best["seed_sd"] == pytest.approx(fits.seed_sigma)
    o = {x["claim"].split(" <")[0]: x for x in fits.orderings}
    reg = o["regularized asymptote"]
    assert reg["lhs"] == pytest.approx(REG[2], abs=1e-3) and reg["rhs"] == pytest.approx(best["val_loss"])
    assert reg["verdict"] == "held" and reg["p"] >= 0.95  # 0.15 below, noise ~0.01
    ens = o["ensemble asymptote (best size, K -> inf)"]
    assert ens["lhs"] == pytest.approx(3.125, abs=2e-3) and ens["verdict"] == "held"  # 3.125 vs 3.5
    assert o["joint asymptote (K -> inf, then N -> inf)"]["lhs"] == pytest.approx(3.1, abs=5e-3)
    for x in fits.orderings:
        assert x["verdict"] == (
            "did not hold" if x["lhs"] >= x["rhs"] else "held" if x["p"] >= 0.95 else "held in the point estimate"
        )


def test_the_three_verdicts(tmp_path):
    f = recipe_fits.Fits(str(tmp_path), recipe(), RecipePlan())
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.01, 500)
    f.samples = {("x",): 3.0 + base, ("far",): 3.5 + base, ("near",): 3.003 + rng.normal(0, 0.01, 500)}
    assert f.ordering("x < far", ("x",), ("far",), 3.0, 3.5)["verdict"] == "held"
    near = f.ordering("x < near", ("x",), ("near",), 3.0, 3.003)
    assert near["verdict"] == "held in the point estimate" and 0.5 < near["p"] < 0.95
    assert f.ordering("far < x", ("far",), ("x",), 3.5, 3.0)["verdict"] == "did not hold"


def test_report_numbers_equal_fits_json_and_notes_sit_on_their_rows(tmp_path):
    plan = build(tmp_path)
    r = recipe()
    path = recipe_report.write(str(tmp_path), r, plan, {})
    text = open(path).read()
    with open(tmp_path / "fits.json") as fh:
        fits = json.load(fh)
    row = fits["by_budget"][str(REF)]
    assert f"| regularized (over N) | 2M | {row['regularized']['E']:.4f}" in text
    for s, e in row["ensembles"]["by_size"].items():
        assert f"| {s} | " + " | ".join(f"{v:.4f}" for v in e["val_loss_by_k"]) + " |" in text
    eff = row["efficiency"]["regularized"]
    assert f"| regularized | {eff['recipe_loss']:.4f} | {eff['efficiency']:.2f}x [{eff['ci'][0]:.2f}, " in text
    for o in fits["orderings"]:
        assert f"P = {o['p']:.2f}" in text and f"**{o['verdict']}**" in text
    assert "standard (over N)" not in text and "| WD high |" in text and "on their grid's edge (d)" in text
    assert "(1M params)" in text and "0M" not in text
    for line in text.splitlines():  # a note belongs to its row: no free-standing "Note:" lines
        assert not line.startswith("Note:")
    for png in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert os.path.getsize(tmp_path / png) > 1000


def test_member_box_keeps_the_lowest_k_asymptote_not_the_lowest_single_loss():
    hp = Hyper(3e-3, 0.8, 16)
    grid_ep, grid_wd = [4, 8, 16, 32, 64], [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    pts = members.box(hp, grid_ep, grid_wd)
    assert pts[0] == Hyper(3e-3, 0.4, 32)  # the shift: 2x epochs, 0.5x WD
    assert sorted((p.epochs, p.weight_decay) for p in pts[1:]) == [(16, 0.4), (32, 0.2), (32, 0.8), (64, 0.4)]
    assert members.box(Hyper(3e-3, 0.1, 64), grid_ep, grid_wd) == [
        Hyper(3e-3, 0.1, 128),
        Hyper(3e-3, 0.1, 64),
        Hyper(3e-3, 0.2, 128),
    ]  # capped 128, floored 0.1

    # each point's K-limit E and its ensembling gain: members that are better alone gain less from averaging
    truth = {
        (32, 0.4): (3.10, 0.10),
        (16, 0.4): (3.15, 0.02),
        (64, 0.4): (3.05, 0.20),
        (32, 0.2): (3.02, 0.30),
        (32, 0.8): (3.20, 0.05),
    }

    def objective(p: Hyper, k: int) -> float:
        e, gain = truth[(p.epochs, p.weight_decay)]
        return e + gain / k**0.7

    curves = [[objective(p, k) for k in range(1, 6)] for p in pts]
    chosen = members.best(curves)
    asym = [members.k_asymptote(c) for c in curves]
    assert chosen == int(np.argmin(asym)) and pts[chosen] == Hyper(3e-3, 0.2, 32)
    assert int(np.argmin([c[0] for c in curves])) != chosen  # the single-member ranking would pick another


def test_missing_values_for_a_budget_name_the_field(tmp_path, fake_data, fake_trainer):
    from megarecipe.recipes.pipeline import Pipeline
    from tests.recipes.test_recipe import fake_recipe

    r = recipe_file.load(SLIVER, [*fake_recipe(fake_data), "budgets=[1024,512]"])
    with pytest.raises(recipe_file.RecipeError, match=r"standard.certified_at.512.a: missing"):
        Pipeline(r, str(tmp_path / "out"), stop_after="standard", log=lambda m: None).run()
    r = recipe_file.load(SLIVER, fake_recipe(fake_data))
    Pipeline(r, str(tmp_path / "out2"), stop_after="standard", log=lambda m: None).run()
    plan = json.load(open(tmp_path / "out2" / "plan.json"))
    assert sorted(plan["by_budget"]) == ["1024", "2048"] and sorted(plan["by_budget"]["1024"]["standard"]) == ["a", "b"]
    info = RunDir(plan["by_budget"]["1024"]["standard"]["a"]).info()
    assert info["facts"]["epochs"] == 4  # certified_at.1024's, not the reference budget's 2


def test_the_ensemble_stage_trains_the_box_and_keeps_the_lowest_k_asymptote(tmp_path, fake_data, monkeypatch):
    from megarecipe.recipes.pipeline import Pipeline
    from tests.recipes.test_recipe import fake_recipe

    r = recipe_file.load(SLIVER, [*fake_recipe(fake_data), "ensemble.member_box=true", "ensemble.members=4"])
    p = Pipeline(r, str(tmp_path / "out"), log=lambda m: None)
    p.plan = RecipePlan(by_budget={"2048": {"regularized": {"a": "ra", "b": "rb"}}})
    trained = []
    monkeypatch.setattr(p, "run_all", lambda specs: trained.extend(specs))
    best_dir = os.path.abspath(tmp_path / "out" / "ensembles" / "b" / "box" / "ep4_wd0.8")

    def score(runs, ens_dir):  # the (epochs 4, WD 0.8) point: worst alone, lowest K-asymptote
        gain, e = (0.5, 3.0) if ens_dir == best_dir else (0.1, 3.3)
        return [e + gain / k for k in range(1, len(runs) + 1)]

    monkeypatch.setattr(p, "_score", score)
    p.stage_ensembles()
    box = p.plan.member_box["b"]
    # sliver's regularized b: LR 1e-2, WD 0.8, 2 epochs -> shift (4, 0.4); epochs 2 and 8, WD 0.2 and 0.8 around it
    assert [(q["epochs"], q["weight_decay"]) for q in box["points"]] == [
        (4, 0.4),
        (2, 0.4),
        (8, 0.4),
        (4, 0.2),
        (4, 0.8),
    ]
    assert p.plan.ensembles["b"] == best_dir and box["chosen"] == 4
    assert p.plan.ensemble_hyper["b"] == {"lr": 1e-2, "weight_decay": 0.8, "epochs": 4}
    assert len(trained) == 5 * 4 and len({s.run_dir for s in trained}) == 20  # K members at each box point


def test_the_recipes_seed_shifts_every_runs_seed_members_included(tmp_path, fake_data, monkeypatch):
    from megarecipe.recipes.pipeline import Pipeline
    from tests.recipes.test_recipe import fake_recipe

    def seeds(extra):
        r = recipe_file.load(SLIVER, [*fake_recipe(fake_data), *extra])
        p = Pipeline(r, str(tmp_path / f"out{len(extra)}"), log=lambda m: None)
        p.plan = RecipePlan(by_budget={"2048": {"regularized": {"a": "ra", "b": "rb"}}})
        run = [o for o in p.overrides("a", Hyper()) if o.startswith("run.seed=")]
        _, specs = p.member_runs("b", 2048, Hyper(1e-2, 0.8, 4), str(tmp_path / "ens"), count=3)
        return run, [[o for o in s.overrides if o.startswith("run.seed=")][-1] for s in specs]

    assert seeds([]) == ([], ["run.seed=1234", "run.seed=1235", "run.seed=1236"])
    assert seeds(["seed=7"]) == (["run.seed=1241"], ["run.seed=1241", "run.seed=1242", "run.seed=1243"])
    with pytest.raises(recipe_file.RecipeError, match="seed: must be >= 0"):
        recipe_file.load(SLIVER, ["seed=-1"])


def test_the_report_lists_sizes_in_the_recipe_order_not_fits_json_sorted_keys():
    """fits.json is written with sorted keys (h16, h32, h64, h8); the report reads it back in the recipe's order."""
    from megarecipe.analysis.recipe_report import _in_size_order

    written = {"standard_runs": {"h16": 2, "h32": 3, "h64": 4, "h8": 1}, "by_size": [{"h64": {"h8": 0}, "h8": 5}]}
    got = _in_size_order(written, ["h8", "h16", "h32", "h64"])
    assert list(got) == ["standard_runs", "by_size"] and got == written
    assert list(got["standard_runs"]) == ["h8", "h16", "h32", "h64"]
    assert list(got["by_size"][0]) == ["h8", "h64"]
    # the run keys of other budgets (SIZE_D<tokens>: ensemble_hyper, member_box) too, each after its size's
    keys = {"h16": 0, "h16_D4096": 0, "h64": 0, "h8": 0, "h8_D16384": 0, "h8_D4096": 0}
    got = list(_in_size_order(keys, ["h8", "h16", "h64"]))
    assert got == ["h8", "h8_D4096", "h8_D16384", "h16", "h16_D4096", "h64"]
    not_keys = {"h64": 0, "h8": 0, "h8_Dx": 0}  # h8_Dx names no run: the map is left as it is
    assert list(_in_size_order(not_keys, ["h8", "h64"])) == ["h64", "h8", "h8_Dx"]
