"""The Hugging Face export: transformers' Llama computes our logits, and its tokenizer our token ids."""

import os
import random

import pytest
import torch

from megarecipe.model.export import load_export
from tests.eval.conftest import make_run

TRICKY = [
    "Question: what?\nAnswer: yes",
    "  leading and trailing  ",
    "a   b\t c",
    "bag \nnext",
    "bag\n next",
    "\n",
    " \n \n ",
    "x\r\ny",
    "",
    " ",
    "ﬁne Ａ ½ café\u00a0x",
    "Émile's 3.14 «quotes» — dash",
    "a\n\n\nb",
]


@pytest.mark.parametrize("shape", [{}, {"num_query_groups": 4, "rope_theta": 10000.0}])
def test_transformers_llama_gives_the_reference_logits(tmp_path, tokenizer_model, shape):
    from transformers import LlamaForCausalLM

    from megarecipe.model.hf import export_hf

    run = make_run(tmp_path / "run", tokenizer_model, seed=3, **shape)
    out = export_hf(os.path.join(run, "export"), str(tmp_path / "hf"))
    hf = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ours = load_export(os.path.join(run, "export"))[0]
    tokens = torch.randint(0, 2048, (3, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hf(tokens).logits - ours(tokens)).abs().max().item()
    assert diff < 1e-5
    assert hf.config.max_position_embeddings == 256 and hf.config.vocab_size == 2048


def test_autotokenizer_loads_offline_and_splits_as_sentencepiece(tiny_hf, tokenizer_model, monkeypatch):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    from megarecipe.analysis.tasks import TASKS, data_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(tiny_hf)
    sp = spm.SentencePieceProcessor(model_file=tokenizer_model)
    texts = list(TRICKY)
    rng = random.Random(0)
    alphabet = "ab .,'\n\t\r\u00a0\u3000ﬁéＡ½-\"xyz"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(500)]
    import pyarrow as pa

    for task in TASKS:  # the first items of every task's data, every string column
        with pa.memory_map(data_file(task)) as src:
            table = pa.ipc.open_stream(src).read_all().slice(0, 30)
        for column in table.column_names:
            texts += [v for v in table.column(column).to_pylist() if isinstance(v, str)]
    wrong = [t for t in texts if tok(t, add_special_tokens=False)["input_ids"] != sp.encode(t)]
    assert not wrong, f"{len(wrong)} of {len(texts)} strings split differently, e.g. {wrong[:3]}"
    assert tok.eos_token_id == sp.eos_id() and tok.bos_token_id == sp.bos_id()
    assert tok("Hello there")["input_ids"] == sp.encode("Hello there")  # no BOS added, as in training


def test_export_tool_errors_in_one_line(tmp_path, capsys):
    from megarecipe.cli.export_hf import main

    assert main([str(tmp_path), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no export" in err and "\n" not in err


def test_a_tokenizer_json_run_exports_with_its_tokenizer(tmp_path, monkeypatch):
    """A run prepared with a Hugging Face tokenizer.json: the export and the HF export carry it, and
    transformers' AutoTokenizer gives the ids the data was made of (no BOS added, the chosen EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    from megarecipe.data.corpus import sotu_files
    from megarecipe.data.tokenizer import load_tokenizer, read_text
    from megarecipe.model.hf import export_hf

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(
        [read_text(f) for f in sotu_files()[::50]],
        trainers.BpeTrainer(
            vocab_size=800,
            special_tokens=["<s>", "<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    hf.save(str(tmp_path / "given.json"))
    data = tmp_path / "data"  # what prepare_data leaves in a data dir: tokenizer.json + the config naming EOS
    data.mkdir()
    ours = load_tokenizer(load_tokenizer(str(tmp_path / "given.json")).save(str(data)))
    assert ours.kind == "hf" and ours.eos_token == "<|endoftext|>"
    run = make_run(tmp_path / "run", str(data / "tokenizer.json"))
    assert sorted(os.listdir(os.path.join(run, "export")))[-2:] == ["tokenizer.json", "tokenizer_config.json"]
    assert load_tokenizer(os.path.join(run, "export")).eos_id == ours.eos_id
    out = export_hf(os.path.join(run, "export"), str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(out)
    texts = TRICKY + [read_text(sotu_files()[3])[:3000]]
    assert [tok(t)["input_ids"] for t in texts] == [ours.encode(t) for t in texts]
    assert tok.eos_token_id == ours.eos_id == hf.token_to_id("<|endoftext|>")


def test_export_files_follow_the_umask_and_carry_a_generation_config(tmp_path, tiny_run):
    """safetensors wrote model.safetensors 0600 while the rest was 0644: teammates could not read it."""
    import json
    import stat

    from megarecipe.model.hf import export_hf

    old = os.umask(0o022)
    try:
        out = export_hf(os.path.join(tiny_run, "export"), str(tmp_path / "hf"))
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode) for name in os.listdir(out)}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
    with open(os.path.join(out, "generation_config.json")) as f:
        generation = json.load(f)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (config["bos_token_id"], config["eos_token_id"])
    assert generation["max_length"] == 256
