"""tools/zero_plan.py planning (no GPU, no data): refusals, fits, the memory model's orderings, --write."""

import json
import os

import pytest

from megarecipe.cli.zero_plan import main
from megarecipe.config import load_config, resolve_layout

GPU = ["--nodes", "2", "--gpus-per-node", "8"]


@pytest.fixture(scope="module")
def plan_1p4b(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    assert (
        main(["configs/1.4b.yaml", "model.vocab_size=128256", *GPU, "--gpu-memory", "80GB", "--json", str(path)]) == 0
    )
    return json.loads(path.read_text())["candidates"]


def test_refused_layouts_are_listed_with_the_reason_and_never_ranked(plan_1p4b):
    refused = [c for c in plan_1p4b if c["refused"]]
    ranked = [c for c in plan_1p4b if c["rank"] is not None]
    assert refused and ranked and len(refused) + len(ranked) == len(plan_1p4b)
    for c in plan_1p4b:
        bad = (c["pp"] > 1 and c["ds_config"]["zero_optimization"]["stage"] > 1) or c["zero"] == "zero0"  # bf16
        assert bool(c["refused"]) == bad or "not divisible" in (c["refused"] or ""), c["name"]
        if c["refused"]:
            assert c["rank"] is None and c["memory"] is None
    assert any("ZeRO stage 0 with bf16" in c["refused"] for c in refused)
    assert any("with ZeRO stage 3 is not supported" in c["refused"] for c in refused)


def test_ranked_candidates_pass_validate(plan_1p4b, tmp_path):
    from megarecipe.plan.candidates import write_ds_json

    for c in sorted((c for c in plan_1p4b if c["rank"]), key=lambda c: c["rank"])[:10]:
        ds = write_ds_json(c["zero"], str(tmp_path / f"{c['zero']}.json"))
        cfg = load_config(
            "configs/1.4b.yaml",
            [
                "model.vocab_size=128256",
                "train.precision=bf16",
                f"parallel.tp={c['tp']}",
                f"parallel.pp={c['pp']}",
                f"train.micro_batch_size={c['micro_batch_size']}",
                f"model.recompute={c['recompute']}",
                f"parallel.ds_config={ds}",
            ],
        )
        assert resolve_layout(cfg, world_size=16).dp == c["dp"]


def test_fit_is_needed_bytes_with_margin_against_the_budget(tmp_path):
    path = tmp_path / "small.json"
    assert (
        main(["configs/1.4b.yaml", "model.vocab_size=128256", *GPU, "--gpu-memory", "16GB", "--json", str(path)]) == 0
    )
    candidates = [c for c in json.loads(path.read_text())["candidates"] if c["rank"]]
    assert {True, False} == {c["fits"] for c in candidates}
    for c in candidates:
        need = (
            c["memory"]["total"]
            - c["memory"]["model_states"]
            + max(c["memory"]["model_states"], c["memory"]["deepspeed_model_states"] or 0)
        )
        assert c["fits"] == (need * 1.10 <= 16e9), c["name"]
    fitting_ranks = [c["rank"] for c in candidates if c["fits"]]
    assert max(fitting_ranks) < min(c["rank"] for c in candidates if not c["fits"])


def test_memory_model_orders_stages_and_recompute():
    from megarecipe.plan.candidates import ds_json
    from megarecipe.plan.memory import ZeroSetting, plan_memory

    m = load_config("configs/1.4b.yaml", ["model.kernels=local"]).model

    def mem(zero, recompute="none", model=m):
        return plan_memory(
            model,
            128256,
            ZeroSetting.from_json(ds_json(zero)),
            1,
            1,
            16,
            1,
            4,
            recompute,
            True,
            True,
            with_deepspeed=False,
        )

    assert mem("zero3").model_states < mem("zero2").model_states < mem("zero1").model_states < mem("zero0").model_states
    assert mem("zero2-offload").optimizer == 0 < mem("zero2-offload").host
    assert mem("zero1", "full").activations < mem("zero1", "selective").activations < mem("zero1").activations
    # fused attention (auto on a GPU) keeps no scores: selective recompute has next to nothing left to save (one
    # log-sum-exp per head and token), and there is no score matrix to recompute
    fused = load_config("configs/1.4b.yaml", []).model
    none, selective = (mem("zero1", r, model=fused).activations for r in ("none", "selective"))
    assert selective < none < 1.01 * selective and none < mem("zero1", "selective").activations


def test_write_gives_a_ds_config_the_trainer_takes(tmp_path, capsys):
    out = tmp_path / "300m-best.json"
    assert (
        main(
            [
                "configs/300m.yaml",
                "model.vocab_size=32000",
                "--gpus-per-node",
                "8",
                "--gpu-memory",
                "80GB",
                "--write",
                str(out),
            ]
        )
        == 0
    )
    ds = json.loads(out.read_text())
    assert set(ds) == {"zero_optimization", "steps_per_print", "wall_clock_breakdown"}
    overrides = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert f"parallel.ds_config={out}" in overrides
    cfg = load_config("configs/300m.yaml", ["model.vocab_size=32000", "train.precision=bf16", *overrides])
    resolve_layout(cfg, world_size=8)


def test_a_gpu_plan_takes_the_gpu_kernels_on_any_machine(capsys):
    """Planning model.kernels=te for GPUs from a machine without CUDA or Transformer Engine: the candidates are
    judged for the GPUs (none refused for the kernels) and the header names the fused attention assumed."""
    assert (
        main(
            [
                "configs/tiny.yaml",
                "model.vocab_size=2048",
                "model.kernels=te",
                "--gpus-per-node",
                "2",
                "--gpu-memory",
                "80GB",
                "--tp",
                "1",
                "--pp",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "fused attention (model.kernels=te)" in out and "needs a CUDA device" not in out, out
    assert "Transformer Engine" not in out, out


@pytest.mark.parametrize(
    "args, field",
    [
        (["configs/tiny.yaml", "model.vocab_size=2048"], "--gpus-per-node or --processes"),
        (["configs/tiny.yaml", "model.vocab_size=2048", "--gpus-per-node", "8"], "--gpu-memory"),
        (["configs/tiny.yaml", "data.dir=/nonexistent", "--processes", "2"], "model.vocab_size"),
        (["configs/tiny.yaml", "model.vocab_size=2048", "--processes", "2", "--zero", "zero9"], "--zero"),
        (
            ["configs/tiny.yaml", "model.hidden_size=130", "model.vocab_size=2048", "--processes", "2"],
            "model.hidden_size",
        ),
        *[
            (
                [
                    "configs/tiny.yaml",
                    "model.vocab_size=2048",
                    "--gpus-per-node",
                    "8",
                    "--gpu-memory",
                    "80GB",
                    flag,
                    value,
                ],
                f"{flag} {value}: out of range",
            )
            for flag, value in (("--nodes", "0"), ("--efficiency", "0"), ("--margin", "-1"), ("--peak-tflops", "-5"))
        ],
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, field, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and field in err[0], err


def test_planning_modules_import_neither_deepspeed_nor_megatron():
    import subprocess
    import sys

    code = (
        "import sys, megarecipe.cli.zero_plan, megarecipe.plan.candidates, megarecipe.plan.memory, "
        "megarecipe.plan.comm, megarecipe.plan.rank, megarecipe.plan.report, megarecipe.plan.measure; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('deepspeed', 'megatron')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("kernels,recompute", [("local", "none"), ("sdpa", "none"), ("local", "selective")])
def test_planned_layer_activations_are_what_autograd_keeps(megatron_world, kernels, recompute):
    """Per layer: the saved tensors of a 2-layer model less those of a 1-layer one, each storage once."""
    import torch

    from megarecipe.config import ModelConfig
    from megarecipe.model.llama import build_model
    from megarecipe.parallel.memory import SavedActivations
    from megarecipe.plan.memory import layer_activation_elements

    def kept(m, batch):
        model = build_model(m, 512, kernels=kernels)
        tokens = torch.randint(0, 512, (batch, m.seq_len))
        positions = torch.arange(m.seq_len).unsqueeze(0).expand_as(tokens)
        with SavedActivations(model.parameters()) as saved:
            model(tokens, positions, None, labels=tokens)
        return saved.bytes

    for shape, batch in [
        (dict(), 2),
        (dict(num_attention_heads=8, num_query_groups=8, seq_len=96), 3),
        (dict(hidden_size=192, ffn_hidden_size=512, num_attention_heads=6, num_query_groups=3), 1),
    ]:
        one, two = (ModelConfig(num_layers=n, recompute=recompute, **shape) for n in (1, 2))
        measured = kept(two, batch) - kept(one, batch)
        planned = 4 * layer_activation_elements(one, batch, 1, recompute, kernels == "sdpa")[0]
        assert abs(planned - measured) <= 0.01 * measured, (shape, planned, measured)


def test_measuring_again_in_the_same_out_replaces_the_earlier_scratch_run(tmp_path, monkeypatch):
    """A second `--measure --out DIR`: the earlier measurement's checkpoint made the trainer refuse every candidate,
    and the tool then said that nothing fits."""
    import subprocess
    from types import SimpleNamespace

    from megarecipe.plan import measure
    from megarecipe.rundir import RunDir

    seen = []

    def trainer(args, *rest, **kw):
        run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("run.dir="))
        seen.append(os.path.isdir(os.path.join(run_dir, "checkpoints")))
        return subprocess.CompletedProcess(args, 1, "", "stand-in trainer")

    monkeypatch.setattr(measure.direct, "captured", trainer)
    c = SimpleNamespace(zero="zero1", name="zero1-tp1-pp1-mbs4-rcnone", overrides=lambda ds: [])
    old = tmp_path / "runs" / c.name / "checkpoints"
    old.mkdir(parents=True)
    (old / "latest").write_text("step00000002")
    measure.run_candidate(c, "configs/tiny.yaml", [], 1, str(tmp_path), 2)
    assert seen == [False]
    with RunDir(str(tmp_path / "runs" / c.name)).hold():  # a measurement running in another process: left alone
        got = measure.run_candidate(c, "configs/tiny.yaml", [], 1, str(tmp_path), 2)
    assert "in use by another process" in got["error"] and seen == [False]
