"""A corpus a Megatron-LM user already has, written by megatron-core's own builder, trains end to end."""

import os

import numpy as np
import pytest

from megarecipe.cli.prepare_data import main as prepare_data
from megarecipe.data.meta import load_meta
from tests.distributed.test_train import assert_falls
from tests.helpers import losses, train
from tests.unit.test_data import documents

pytestmark = pytest.mark.slow


def test_a_megatron_dataset_trains(tiny_data, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    meta = load_meta(tiny_data)
    docs = documents(meta, "val") + documents(meta, "train")
    rng = np.random.default_rng(0)
    prefix = str(tmp_path / "corpus_text_document")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)  # not our dtype: converted on the way in
    for k in rng.permutation(len(docs)):
        d = docs[k].astype(np.int64)
        if k % 2:  # preprocess_data.py without --append-eod: no EOS; one is appended
            d = d[:-1]
        cut = sorted(rng.choice(np.arange(1, len(d)), 3, replace=False))  # several sentences per document
        builder.add_document(d, np.diff([0, *cut, len(d)]).tolist())
    builder.finalize(prefix + ".idx")
    out = str(tmp_path / "data")
    assert (
        prepare_data(
            [
                "--megatron",
                prefix,
                "--tokenizer",
                meta.tokenizer_path,
                "--out",
                out,
                "--val-tokens",
                "20000",
                "--no-progress",
            ]
        )
        == 0
    )
    made = load_meta(out)
    val, train_docs = documents(made, "val"), documents(made, "train")
    # whole documents, each one of the originals (all with EOS now), none in both splits
    original = {d.tobytes() for d in docs}
    assert {d.tobytes() for d in val} <= original and {d.tobytes() for d in train_docs} <= original
    assert not {d.tobytes() for d in val} & {d.tobytes() for d in train_docs}
    assert len(val) + len(train_docs) == len(docs) and len(val) >= 1
    assert made.val_tokens >= 20000 > made.val_tokens - len(val[-1])
    assert made.sources[0]["format"] == "megatron" and os.path.basename(made.tokenizer_path) == "tokenizer.model"

    run_dir, _ = train(
        tmp_path,
        "mg",
        1,
        out,
        "parallel.ds_config=zero0",
        "train.global_batch_size=8",
        "train.micro_batch_size=8",
        "train.eval_every=100",
    )
    assert_falls(losses(run_dir))
