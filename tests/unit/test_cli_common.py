import glob
import os
import runpy
import sys

import pytest

from megarecipe import errors
from megarecipe.cli import check_hostfile, common


def test_check_hostfile_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_hostfile.main(["--help"])
    assert exit_info.value.code == 0
    assert "hostfile" in capsys.readouterr().out


def test_check_hostfile_without_argument_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_hostfile.main([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


TOOLS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "tools", "*.py")))


def err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("tool", TOOLS, ids=os.path.basename)
def test_every_tool_answers_help_and_exits_0(tool, monkeypatch, capsys):
    """In this process (runpy, as `python tools/X.py --help`): no subprocess per tool."""
    monkeypatch.setattr(sys, "argv", [tool, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(tool, run_name="__main__")
    assert exit_info.value.code in (0, None)
    assert "usage" in capsys.readouterr().out


def test_a_user_error_exits_2_and_a_run_error_3_in_one_line(capsys):
    def raising(error):
        def body():
            raise error

        return body

    assert common.run(raising(errors.ConfigError("model.x: bad; fix it"))) == 2
    assert err_lines(capsys) == ["error: model.x: bad; fix it"]
    assert common.run(raising(errors.RunError("the loss is NaN"))) == 3
    assert err_lines(capsys) == ["error: the loss is NaN"]
    assert common.run(raising(errors.RunError("damaged")), run_error=2) == 2
    assert common.run(lambda: 0) == 0 and common.run(lambda: 1) == 1


def test_an_os_error_is_one_line_where_the_tool_writes_and_goes_up_elsewhere(tmp_path, capsys):
    import errno

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    assert common.run(full, where=str(tmp_path / "out")) == 2
    (line,) = err_lines(capsys)
    assert line.startswith(f"error: {tmp_path / 'out'}: No space left on device; the disk is full")
    with pytest.raises(OSError):
        common.run(full)


def test_a_ranked_error_is_printed_by_the_rank_that_should(monkeypatch, capsys):
    def body():
        raise errors.DataError("data.dir: missing")

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert common.run(body, ranked=True) == 2
    assert err_lines(capsys) == []  # rank 0 of its node says it
    assert common.run(body, ranked=True, before_group=False) == 2
    assert err_lines(capsys) == ["error (rank 1): data.dir: missing"]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert common.run(body, ranked=True) == 2
    assert err_lines(capsys) == ["error: data.dir: missing"]


def test_the_config_rule_takes_overrides_anywhere_after_the_config(capsys):
    p = common.Parser(prog="tool")
    p.add_config()
    p.add_argument("--processes", type=int)
    args = p.parse_args(["configs/tiny.yaml", "a.b=1", "--processes", "2", "c.d=2"])
    assert (args.config, args.overrides, args.processes) == ("configs/tiny.yaml", ["a.b=1", "c.d=2"], 2)
    for argv in (["a.b=1"], ["configs/tiny.yaml", "other.yaml"]):
        with pytest.raises(SystemExit) as exit_info:
            p.parse_args(argv)
        assert exit_info.value.code == 2
        (line,) = err_lines(capsys)
        assert line.startswith("error: ")
    optional = common.Parser(prog="tool")
    optional.add_config(required=False)
    assert optional.parse_args(["a.b=1"]).config is None


def test_zero_plan_takes_overrides_after_options(capsys):
    from megarecipe.cli.zero_plan import main

    assert main(["configs/tiny.yaml", "--processes", "2", "model.vocab_size=128", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "vocab 128" in out


def test_zero_plan_a_bad_override_after_options_is_still_one_line(capsys):
    from megarecipe.cli.zero_plan import main

    assert main(["configs/tiny.yaml", "--processes", "2", "model.no_such_field=1"]) == 2
    (line,) = err_lines(capsys)
    assert line.startswith("error: ") and "no_such_field" in line
    with pytest.raises(SystemExit) as exit_info:  # not key=value: one line from the parser
        main(["configs/tiny.yaml", "--processes", "2", "model.vocab_size"])
    assert exit_info.value.code == 2
    (line,) = err_lines(capsys)
    assert line.startswith("error: model.vocab_size: not a key=value override")


def test_check_config_takes_options_after_the_config(capsys):
    from megarecipe.cli.check_config import main

    assert main(["configs/tiny.yaml", "model.vocab_size=128", "--world-size", "0"]) == 2
    (line,) = err_lines(capsys)
    assert line.startswith("error: --world-size 0 must be >= 1")


def test_distill_train_takes_overrides_after_its_options(tmp_path, capsys):
    from megarecipe.cli.distill import main

    out = str(tmp_path / "kd")
    argv = ["train", "--teacher", str(tmp_path), "--student", "configs/tiny.yaml", "--out", out]
    assert main([*argv, "model.vocab_size=128", "--alpha", "0.5", f"run.dir={tmp_path / 'other'}"]) == 2
    (line,) = err_lines(capsys)
    assert line == f"error: run.dir={tmp_path / 'other'}: run.dir is set by --out {out}; give it once"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "model.vocab_size=128", "--alpha", "0.5", "stray"])
    assert exit_info.value.code == 2 and err_lines(capsys) == ["error: unrecognized arguments: stray"]
