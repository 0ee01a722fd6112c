"""Numbers and files a hostile user types: each is one line naming the flag, field or path and the fix, exit 2,
never a plan, a fit or a file made of nonsense (issue 24)."""

import os

import pytest


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--tp", "-1"], "--tp -1"),
        (["--micro-batch", "0"], "--micro-batch 0"),
        (["--pp", "0"], "--pp 0"),
        (["model.vocab_size=0"], "model.vocab_size=0"),
        (["model.num_layers=100000"], "model.num_layers=100000"),
    ],
)
def test_zero_plan_refuses_impossible_layouts_and_sizes(capsys, extra, fragment):
    from megarecipe.cli.zero_plan import main

    settings = [e for e in extra if "=" in e]
    flags = [e for e in extra if "=" not in e]
    assert main(["configs/tiny.yaml", "model.vocab_size=2048", *settings, "--processes", "2", *flags]) == 2
    assert fragment in one_line(capsys)


def test_fit_scaling_refuses_negative_losses_and_binary_tables(tmp_path, capsys):
    from megarecipe.cli.fit_scaling import main

    table = tmp_path / "neg.csv"
    table.write_text("x,loss\n1,-1\n2,-2\n4,-2.5\n8,-2.7\n")
    assert main(["--points", str(table), "--out", str(tmp_path / "neg"), "--bootstrap", "0"]) == 2
    assert "loss = -1" in one_line(capsys) and not (tmp_path / "neg" / "fits.json").exists()
    for name, data in (("random.bin", bytes(range(256)) * 8), ("nul.csv", b"1,3.5\n2,\x00\n")):
        (tmp_path / name).write_bytes(data)
        assert main(["--points", str(tmp_path / name), "--out", str(tmp_path / "bin"), "--bootstrap", "0"]) == 2
        err = one_line(capsys)
        assert name in err and "not a text table" in err


def test_the_launcher_names_the_run_dir_two_runs_share(tmp_path):
    from megarecipe.launch import LaunchError, RunSpec, launch

    (tmp_path / "y").mkdir()
    specs = [RunSpec("configs/tiny.yaml", run_dir=str(tmp_path / d)) for d in ("x", "y/../x")]
    with pytest.raises(LaunchError, match=f"share a run_dir \\({tmp_path}/x\\)"):
        launch(specs)


def test_sample_refuses_an_infinite_temperature(tiny_data, tmp_path, capsys):
    from megarecipe.cli.distill import main
    from tests.unit.test_distill import _teacher_run

    teacher = _teacher_run(tmp_path, "t", tiny_data)
    out = tmp_path / "synth"
    assert (
        main(["sample", "--teacher", str(teacher), "--tokens", "4096", "--out", str(out), "--temperature", "inf"]) == 2
    )
    assert "--temperature" in one_line(capsys)
    assert not os.path.exists(out / "meta.json")
