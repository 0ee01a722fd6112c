"""lm-eval with the "megarecipe" model type: its log-likelihoods are our model's, an ensemble is the mean of its
members' logits, and `lm_eval --model hf` on the Hugging Face export gives the same numbers."""

import json
import os
from types import SimpleNamespace

import pytest
import torch

from megarecipe.model.export import load_export
from tests.eval.conftest import make_run

PAIRS = [
    ("Question: Which is a planet?\nAnswer:", " Mars"),
    ("The people of the United States", " shall"),
    ("Question: why?\nAnswer: ", "because"),
    ("To be, or not to be,", " that is the question:"),
    (" ".join(["liberty"] * 300), " and justice"),
]  # longer than seq_len: cut from the left


def requests(pairs):
    return [SimpleNamespace(args=p) for p in pairs]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def direct_loglikelihood(model, sp, context, continuation, seq_len):
    """The hf model's convention written out plainly: encode together, the continuation follows the context."""
    whole = sp.encode(context + continuation)
    ctx = sp.encode(context.rstrip())  # trailing spaces of the context go with the continuation
    cont = whole[len(ctx) :]
    seq = (ctx + cont)[-(seq_len + 1) :]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([seq[:-1]])).float(), -1)[0]
    return sum(logprobs[len(seq) - 1 - len(cont) + j, t].item() for j, t in enumerate(cont))


def test_loglikelihoods_are_our_forward_pass(tiny_run):
    import sentencepiece as spm

    from megarecipe.analysis.lm_eval_model import MegarecipeLM

    model = load_export(os.path.join(tiny_run, "export"))[0]
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tiny_run, "export", "tokenizer.model"))
    got = MegarecipeLM(tiny_run, batch_size=2).loglikelihood(requests(PAIRS), disable_tqdm=True)
    want = [direct_loglikelihood(model, sp, c, x, 256) for c, x in PAIRS]
    assert [g for g, _ in got] == pytest.approx(want, abs=1e-5)


def test_ensemble_is_the_mean_of_member_logits(tmp_path, tiny_run, tokenizer_model):
    from megarecipe.analysis.lm_eval_model import MegarecipeLM

    other = make_run(tmp_path / "b", tokenizer_model, seed=7)
    for name, members in (("one", [tiny_run]), ("two", [tiny_run, other])):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "ensemble.json").write_text(json.dumps({"members": members}))
    single = MegarecipeLM(tiny_run).loglikelihood(requests(PAIRS), disable_tqdm=True)
    assert MegarecipeLM(str(tmp_path / "one")).loglikelihood(requests(PAIRS), disable_tqdm=True) == single

    a, b = (load_export(os.path.join(r, "export"))[0] for r in (tiny_run, other))

    class Mean(torch.nn.Module):
        def forward(self, tokens):
            return (a(tokens) + b(tokens)) / 2

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tokenizer_model)
    want = [direct_loglikelihood(Mean(), sp, c, x, 256) for c, x in PAIRS]
    for resident in (2, 1):  # all members loaded, or streamed one at a time with stored logits
        got = MegarecipeLM(str(tmp_path / "two"), max_resident=resident, batch_size=2, logits_budget_mb=1)
        assert [g for g, _ in got.loglikelihood(requests(PAIRS), disable_tqdm=True)] == pytest.approx(want, abs=1e-5)


def test_item_counts_are_the_files_rows():
    import pyarrow as pa
    from lm_eval.tasks import TaskManager

    from megarecipe.analysis.tasks import TASKS, data_file, write_task_dir

    expected = {
        "arc_easy": 570,
        "arc_challenge": 299,
        "piqa": 1838,
        "sciq": 1000,
        "winogrande": 1267,
        "openbookqa": 500,
        "boolq": 3270,
        "hellaswag": 10042,
    }
    names = [t for t in TASKS if t != "hellaswag"]  # hellaswag's 10k-row preprocessing costs seconds; counted below
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        loaded = TaskManager(include_path=write_task_dir(d, names), include_defaults=False).load(names)["tasks"]
    for name in names:
        with pa.memory_map(data_file(name)) as src:
            rows = pa.ipc.open_stream(src).read_all().num_rows
        assert len(list(loaded[name].eval_docs)) == rows == expected[name]
    with pa.memory_map(data_file("hellaswag")) as src:
        assert pa.ipc.open_stream(src).read_all().num_rows == expected["hellaswag"]


def per_item(output, task):
    return [[resp[0][0] for resp in s["resps"]] for s in sorted(output["samples"][task], key=lambda s: s["doc_id"])]


def test_hf_model_on_the_export_agrees_with_ours(tiny_run, tiny_hf, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from megarecipe.analysis.downstream import evaluate
    from megarecipe.analysis.tasks import write_task_dir

    tasks, limit = ["arc_easy", "piqa", "winogrande", "boolq"], 20
    ours = evaluate(tiny_run, tasks, limit=limit, log_samples=True)
    manager = TaskManager(include_path=write_task_dir(str(tmp_path / "tasks"), tasks), include_defaults=False)
    hf = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_hf},dtype=float32",
        device="cpu",
        batch_size=16,
        tasks=tasks,
        task_manager=manager,
        limit=limit,
        log_samples=True,
    )
    for task in tasks:
        a, b = per_item(ours, task), per_item(hf, task)
        assert len(a) == len(b) == limit
        for x, y in zip(a, b, strict=True):
            assert x == pytest.approx(y, rel=1e-5, abs=1e-4)
        for metric in ("acc,none", "acc_norm,none"):
            assert ours["results"][task].get(metric) == hf["results"][task].get(metric)
        assert 0 <= ours["results"][task]["acc,none"] <= 1
