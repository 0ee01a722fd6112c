import pytest

from megarecipe.cli import check_hostfile


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
