"""Counts with suffixes and exponents wherever an integer count is meant."""

import pytest

from megarecipe.cli import distill, tune
from megarecipe.config import ConfigError, load_config
from megarecipe.config.numbers import parse_count


@pytest.mark.parametrize(
    "text, value",
    [
        ("200M", 200_000_000),
        ("1.5B", 1_500_000_000),
        ("1e9", 10**9),
        ("65536", 65536),
        ("20k", 20_000),
        ("2T", 2 * 10**12),
        ("65_536", 65536),
        (" 3K ", 3000),
        ("2.5e-1k", 250),
        ("1e18", 10**18),
    ],
)
def test_counts(text, value):
    assert parse_count(text, "x") == value


@pytest.mark.parametrize(
    "text, why",
    [
        ("1e400", "larger than"),
        ("inf", "not finite"),
        ("nan", "not finite"),
        ("1.5", "not a whole number"),
        ("0", "outside"),
        ("-2M", "outside"),
        ("2e18", "larger than"),
        ("12X", "not a count"),
        ("", "not a count"),
        ("1" * 80, "too long"),
        ("1.0000000000000000000000000000001B", "whole"),
    ],
)
def test_not_counts(text, why):
    with pytest.raises(ConfigError, match=why) as e:
        parse_count(text, "data.train_tokens")
    assert str(e.value).startswith("data.train_tokens=") and "200M" in str(e.value)


def test_config_integer_fields_take_counts(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  train_tokens: 1.5B\n  val_tokens: 1e6\ntrain:\n  stop_after: 2k\n")
    cfg = load_config(str(path), ["train.eval_every=1e3"])
    assert (cfg.data.train_tokens, cfg.data.val_tokens, cfg.train.stop_after, cfg.train.eval_every) == (
        1_500_000_000,
        10**6,
        2000,
        1000,
    )
    assert load_config(None, ["data.train_tokens=200M", "run.seed=0"]).data.train_tokens == 200_000_000
    assert load_config(None, ["run.seed=0", "train.checkpoint_every=0"]).run.seed == 0  # plain ints as before
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == 1e-3  # floats stay floats


def test_config_names_the_field_of_a_bad_count():
    with pytest.raises(ConfigError, match=r"^data.train_tokens=1e400 is larger than"):
        load_config(None, ["data.train_tokens=1e400"])
    with pytest.raises(ConfigError, match=r"^train.stop_after=inf is not finite"):
        load_config(None, ["train.stop_after=inf"])


@pytest.mark.parametrize("tokens", ["1e400", "inf"])
def test_tools_refuse_a_bad_token_count_in_one_line(tmp_path, capsys, tokens):
    """tools/tune.py --tokens and distill sample --tokens died with OverflowError here."""
    assert tune.main(["--ladder", "configs/tiny.yaml", "--tokens", tokens, "--out", str(tmp_path / "t")]) == 2
    assert (
        distill.main(
            [
                "sample",
                "--teacher",
                str(tmp_path / "none"),
                "--tokens",
                tokens,
                "--out",
                str(tmp_path / "s"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: --tokens=") for line in lines), lines
