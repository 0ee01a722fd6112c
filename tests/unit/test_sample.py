"""Sequence-level distillation: KV-cache generation equals the plain forward, `sample` is deterministic,
resumable and decodes to text, and data.mix trains on several dirs at exact ratios."""

import json
import os

import numpy as np
import pytest
import torch

from megarecipe.config import ConfigError, ModelConfig, load_config
from megarecipe.model.export import write_export
from megarecipe.model.generate import generate
from megarecipe.model.reference import KVCache, Llama
from megarecipe.preflight import check_run

GQA = ModelConfig(
    num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2, seq_len=64
)


def test_kv_cache_forward_equals_the_full_forward():
    torch.manual_seed(0)
    model = Llama(GQA, 96).eval()
    tokens = torch.randint(0, 90, (3, 20))
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(GQA.num_layers)
        parts = [model(tokens[:, :7], cache), model(tokens[:, 7:12], cache)]  # a prefill, then a block after it
        parts += [model(tokens[:, i : i + 1], cache) for i in range(12, 20)]  # then one token at a time
        assert torch.equal(model(tokens, None), full)  # the no-cache path is the plain forward
    assert cache.length == 20
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("greedy,top_p", [(True, None), (False, None), (False, 0.9)])
def test_generation_with_the_cache_equals_without(greedy, top_p):
    torch.manual_seed(1)
    models = [Llama(GQA, 96).eval(), Llama(GQA, 96).eval()]  # an ensemble of two
    prompt = torch.tensor([[2], [5], [2], [9]])

    def run(use_cache):
        gen = torch.Generator().manual_seed(7)
        return generate(
            models, prompt, 30, 90, temperature=1.3, top_p=top_p, generator=gen, use_cache=use_cache, greedy=greedy
        )

    with_cache, without = run(True), run(False)
    assert torch.equal(with_cache, without)
    assert with_cache.shape == (4, 31) and int(with_cache.max()) < 90
    rows = len({tuple(r) for r in with_cache[:, 1:].tolist()})
    assert rows == (3 if greedy else 4)  # rows 0 and 2 share a prompt: they differ by their draws only


def _teacher(tmp_path, tiny_data, seq_len=64, seed=0, name="teacher"):
    """A random-init tiny export speaking tiny_data's tokenizer."""
    torch.manual_seed(seed)
    m = ModelConfig(**{**GQA.__dict__, "seq_len": seq_len})
    cfg = load_config("configs/tiny.yaml", [f"model.{k}={v}" for k, v in m.__dict__.items() if v is not None])
    write_export(
        str(tmp_path / name / "export"),
        Llama(m, 2048).state_dict(),
        cfg,
        2048,
        tokenizer_path=os.path.join(tiny_data, "tokenizer.model"),
    )
    return str(tmp_path / name)


@pytest.fixture(scope="module")
def synth(tiny_data, tmp_path_factory):
    """A sampled data dir: 16 sequences of 64 tokens from a random-init teacher, in shards of 6."""
    from megarecipe.distill.sample import sample

    tmp = tmp_path_factory.mktemp("synth")
    teacher = _teacher(tmp, tiny_data)
    meta = sample(teacher, str(tmp / "synth"), tokens=16 * 64, temperature=1.0, seed=3, batch=8, shard_sequences=6)
    return teacher, meta


def test_sample_is_deterministic_resumable_and_decodes(synth, tmp_path):
    from megarecipe.cli.distill import main as distill
    from megarecipe.data.errors import DataError
    from megarecipe.data.meta import load_meta
    from megarecipe.data.tokenizer import load_tokenizer
    from megarecipe.distill.sample import SHARDS, sample

    teacher, meta = synth
    tokens = np.asarray(meta.tokens("train"))
    assert meta.train_tokens == 16 * 64 + 1 and meta.val_tokens == 0 and meta.train_documents == 3
    assert (tokens[::64] == meta.eos_id).all()  # every window starts from EOS
    assert meta.source["teacher"]["members"] == [teacher] and meta.source["seed"] == 3
    assert meta.source["temperature"] == 1.0 and meta.source["top_p"] is None
    text = load_tokenizer(meta.tokenizer_path).decode(tokens[1:64].tolist())
    assert isinstance(text, str) and text.strip()

    out = str(tmp_path / "again")  # killed after two of its three shards, then continued
    assert sample(teacher, out, 16 * 64, seed=3, batch=8, shard_sequences=6, stop_after_shards=2) is None
    assert sorted(os.listdir(os.path.join(out, SHARDS))) == ["plan.json", "shard000000.bin", "shard000001.bin"]
    with pytest.raises(DataError, match="other temperature"):
        sample(teacher, out, 16 * 64, temperature=0.5, seed=3, batch=8, shard_sequences=6)
    assert (
        distill(
            [
                "sample",
                "--teacher",
                teacher,
                "--tokens",
                "1024",
                "--out",
                out,
                "--seed",
                "3",
                "--shard-sequences",
                "6",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    again = load_meta(out)
    assert np.array_equal(np.asarray(again.tokens("train")), tokens) and again.source == meta.source
    assert not os.path.exists(os.path.join(out, SHARDS))

    other = sample(teacher, str(tmp_path / "other"), 4 * 64, seed=4, batch=8, shard_sequences=6, top_p=0.9)
    assert not np.array_equal(np.asarray(other.tokens("train")), tokens[: 4 * 64 + 1])
    assert other.source["top_p"] == 0.9


def test_mix_ratios_are_exact_over_an_epoch(tiny_data, synth):
    from megarecipe.config import mix_sources
    from megarecipe.data.dataset import TokenDataset
    from megarecipe.data.mix import MixDataset

    _, meta = synth
    cfg = load_config(
        "configs/tiny.yaml",
        [
            f"data.mix=[{tiny_data}:0.25,{meta.dir}:0.75]",
            "model.seq_len=64",
            "data.train_tokens=20000",
            "train.global_batch_size=16",
        ],
    )
    assert cfg.data.dir == tiny_data
    layout = check_run(cfg, world_size=1)
    mix = MixDataset(mix_sources(cfg.data), 64, 20000, seed=5)
    real = TokenDataset(tiny_data, 64, 20000, seed=5).num_sequences
    assert layout.num_sequences == real and layout.train_tokens == real * 64  # D counts the real dir only
    assert layout.epoch_sequences == mix.num_sequences == 4 * real
    for epoch in (0, 1):
        ids = mix.sample_ids(epoch * mix.num_sequences, mix.num_sequences)
        assert (ids[:, 0] == 1).sum() == 3 * real
        assert sorted(ids[ids[:, 0] == 0, 1]) == list(range(real))  # each real sequence once per epoch
        synth_ids = ids[ids[:, 0] == 1, 1]
        assert np.bincount(synth_ids, minlength=16).min() >= (3 * real) // 16 - 1  # the small dir cycles evenly
    first = mix.batch_ids(3, 16)
    assert np.array_equal(first, MixDataset(mix_sources(cfg.data), 64, 20000, seed=5).batch_ids(3, 16))
    assert 2 <= (first[:, 0] == 0).sum() <= 6  # every batch is near the ratio, not only the epoch
    assert np.array_equal(np.concatenate([mix.batch_ids(3, 16, r, 2) for r in (0, 1)]), first)
    x, y = mix.windows(first)
    assert x.shape == (16, 64) and torch.equal(x[:, 1:], y[:, :-1])
    assert (x[first[:, 0] == 1, 0] == meta.eos_id).all()


def test_mix_refuses_another_tokenizer_in_one_line(tiny_data, synth, tmp_path):
    import hashlib
    import shutil

    other = tmp_path / "other"  # the sampled dir, as if made with another tokenizer
    shutil.copytree(synth[1].dir, other)
    (other / "tokenizer.model").write_bytes(b"another tokenizer")
    record = json.loads((other / "meta.json").read_text())
    record["tokenizer_sha256"] = hashlib.sha256(b"another tokenizer").hexdigest()
    (other / "meta.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError) as info:
        mix = [f"data.mix=[{tiny_data}:1,{other}:1]", "data.train_tokens=20000"]
        check_run(load_config("configs/tiny.yaml", mix), world_size=1)
    assert "another tokenizer" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="DIR:RATIO"):
        load_config("configs/tiny.yaml", [f"data.mix=[{tiny_data}:0,{other}:1]"])


def _mixed(tmp_path, tiny_data, synth, name: str, nproc: int):
    from tests.helpers import train

    return train(
        tmp_path,
        name,
        nproc,
        tiny_data,
        f"data.mix=[{tiny_data}:0.5,{synth[1].dir}:0.5]",
        "train.stop_after=4",
        "train.eval_every=2",
        "parallel.ds_config=zero1",
    )[0]


@pytest.fixture(scope="module")
def mixed(tiny_data, synth, tmp_path_factory):
    """Four steps on the real and the sampled dir half and half, in one process."""
    return _mixed(tmp_path_factory.mktemp("mixed"), tiny_data, synth, "mixed", 0)


def test_training_on_a_mix(tiny_data, synth, mixed):
    _, meta = synth
    run = mixed
    info = json.loads((run / "run.json").read_text())
    assert [m["dir"] for m in info["data_mix"]] == [tiny_data, meta.dir]
    assert [m["ratio"] for m in info["data_mix"]] == ["1/2", "1/2"]
    assert info["data_mix"][1]["source"]["kind"] == "sampled" and info["data_mix"][0]["source"] is None
    assert info["facts"]["train_tokens"] == (20000 - 1) // 64 * 64 and info["step"] >= 0


@pytest.mark.slow
def test_a_mix_over_two_ranks_trains_as_in_one_process(tiny_data, synth, mixed, tmp_path):
    """ZeRO-1 over two ranks: each rank trains its half of every mixed batch, so the losses are the one-process
    run's (two ranks on the same or on a wrongly mixed half would change every step's loss)."""
    from tests.helpers import losses, scalars

    two = _mixed(tmp_path, tiny_data, synth, "two", 2)
    assert scalars(two, "run/world_size") == {0: 2.0}
    assert len(losses(two)) == 4 and losses(two) == pytest.approx(losses(mixed), abs=2e-4)
    assert scalars(two, "val/loss") == pytest.approx(scalars(mixed, "val/loss"), abs=2e-4)
    facts = [json.loads((run / "run.json").read_text())["data_mix"] for run in (mixed, two)]
    assert facts[0] == facts[1]


def test_sampling_over_two_ranks_gives_the_same_bytes(synth, tmp_path):
    """The shards are dealt out to the ranks (two, started warm as the launchers start them); the data dir does
    not depend on how many there were."""
    from megarecipe.data.meta import load_meta
    from megarecipe.launch import direct
    from tests.helpers import REPO, env

    teacher, meta = synth
    out = tmp_path / "two"
    args = ["sample", "--teacher", teacher, "--tokens", str(16 * 64), "--out", str(out), "--seed", "3"]
    args += ["--shard-sequences", "6", "--device", "cpu"]
    result = direct.captured(args, 2, env(), str(REPO), 300, module="megarecipe.cli.distill")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shard 2/3" in result.stderr and result.stdout.count("wrote") == 1, (result.stdout, result.stderr)
    again = load_meta(str(out))
    assert np.array_equal(np.asarray(again.tokens("train")), np.asarray(meta.tokens("train")))


def test_sampling_on_one_thread_draws_the_tokens_of_the_plain_generation(synth, tmp_path):
    """The recipe samples on one thread of its share, under inference_mode: the same tokens as generate()
    under no_grad on torch's default threads, for the same seed (shard 0 here, as sample() seeds it)."""
    from megarecipe.data.meta import load_meta
    from megarecipe.distill.sample import sample
    from megarecipe.distill.teacher import Teacher

    teacher, meta = synth
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = sample(teacher, str(tmp_path / "one"), 16 * 64, seed=3, batch=8, shard_sequences=6)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(np.asarray(load_meta(one.dir).tokens("train")), np.asarray(meta.tokens("train")))
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([3, 0]).generate_state(1)[0]))
    prompt = torch.full((6, 1), meta.eos_id, dtype=torch.long)
    plain = generate(Teacher(teacher, "cpu").models, prompt, 63, meta.vocab_size, 1.0, None, gen)
    assert np.array_equal(plain.flatten().numpy(), np.asarray(meta.tokens("train"))[: 6 * 64])
