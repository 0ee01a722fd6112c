"""tools/generate.py: KV-cached sampling from a run, an export or an ensemble's averaged logits."""

import json
import os

import pytest
import torch

from megarecipe.cli.generate import main
from megarecipe.data.tokenizer import load_tokenizer
from megarecipe.model.export import load_export
from tests.eval.conftest import make_run


def run_tool(capsys, *args) -> list[str]:
    assert main([*args]) == 0
    return capsys.readouterr().out.splitlines()


def greedy_by_hand(models, ids, steps, vocab):
    """Full forwards without a cache, the mean of the members' logits, argmax: what greedy decoding must give."""
    tokens = torch.tensor([ids])
    for _ in range(steps):
        logits = torch.stack([m(tokens)[:, -1, :vocab] for m in models]).mean(0)
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens[0, len(ids) :].tolist()


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory, tiny_run, tokenizer_model):
    root = tmp_path_factory.mktemp("ens")
    other = make_run(root / "m2", tokenizer_model, seed=5)
    (root / "ensemble.json").write_text(json.dumps({"members": [tiny_run, other]}))
    return str(root)


@pytest.mark.parametrize("which", ["run", "ensemble"])
def test_greedy_is_the_argmax_of_the_averaged_logits(which, tiny_run, ensemble, tokenizer_model, capsys):
    path = tiny_run if which == "run" else ensemble
    runs = [tiny_run] if which == "run" else json.load(open(os.path.join(ensemble, "ensemble.json")))["members"]
    models = [load_export(os.path.join(r, "export"))[0] for r in runs]
    sp = load_tokenizer(tokenizer_model)
    ids = [sp.eos_id, *sp.encode("The President said")]
    with torch.no_grad():
        expected = greedy_by_hand(models, ids, 12, sp.vocab_size)
    if sp.eos_id in expected:
        expected = expected[: expected.index(sp.eos_id)]
    [text] = run_tool(capsys, path, "--prompt", "The President said", "--temperature", "0", "--max-new-tokens", "12")
    assert text.startswith("The President said")
    assert expected and text[len("The President said") :].strip() == sp.decode(expected).strip()
    # top-k 1 at any temperature is greedy too
    assert run_tool(
        capsys,
        path,
        "--prompt",
        "The President said",
        "--top-k",
        "1",
        "--temperature",
        "1.5",
        "--max-new-tokens",
        "12",
        "--seed",
        "9",
    ) == [text]


def test_sampling_is_seeded(tiny_run, capsys):
    export = os.path.join(tiny_run, "export")
    args = [
        export,
        "--prompt",
        "Once",
        "--prompt",
        "To be",
        "--max-new-tokens",
        "20",
        "--top-p",
        "0.95",
        "--temperature",
        "1.2",
    ]
    first = run_tool(capsys, *args, "--seed", "1")
    assert len(first) == 2 and first[0].startswith("Once") and first[1].startswith("To be")
    assert run_tool(capsys, *args, "--seed", "1") == first
    assert run_tool(capsys, *args, "--seed", "2") != first


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--top-p", "0"], "--top-p is out of range"),
        (["--max-new-tokens", "0"], "--max-new-tokens is out of range"),
        (["--prompt", "word " * 300], "no room in model.seq_len=256"),
    ],
)
def test_bad_options_are_one_line(tiny_run, capsys, args, fragment):
    assert main([tiny_run, "--prompt", "x", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err


def test_a_dir_without_a_model_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "ensemble.json" in err and "\n" not in err
