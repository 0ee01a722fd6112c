"""meta.json: what a prepared data dir holds, and the checks run every time one is opened."""
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from megarecipe.data.errors import DataError
from megarecipe import atomic
from megarecipe.data.tokenizer import file_sha256

FORMAT = 1
META, TRAIN, VAL, TOKENIZER = "meta.json", "train.bin", "val.bin", "tokenizer.model"
_PREPARE_HINT = "run tools/prepare_data.py --default --out {d} (or --input FILES... --out {d})"


@dataclass
class DataMeta:
    dir: str                  # where it was loaded from; not stored in meta.json, so a data dir can move
    vocab_size: int
    tokenizer_sha256: str
    dtype: str                # "uint16" or "uint32"
    train_tokens: int
    val_tokens: int
    eos_id: int
    sources: list = field(default_factory=list)     # one dict per input file: path, sha256, bytes, token counts
    bos_id: int = -1
    val_tokens_requested: int = 0
    val_documents: list = field(default_factory=list)   # names of the held-out documents
    documents: list = field(default_factory=list)   # name, sha256, split, offset, tokens; in token-file order
    format: int = FORMAT
    source: dict | None = None   # a synthetic dir's origin (teacher, temperature, top-p, seed); None = prepared text

    def path(self, name) -> str:
        return os.path.join(self.dir, name)

    @property
    def tokenizer_path(self) -> str:
        return self.path(TOKENIZER)

    def content_sha256(self) -> str:
        """What the token files hold, wherever the data dir or its sources lie: the tokenizer, and each
        document's text hash, split and length in token-file order."""
        docs = [(d["sha256"], d["split"], d["tokens"]) for d in self.documents]
        return hashlib.sha256(json.dumps([self.tokenizer_sha256, docs]).encode()).hexdigest()

    def tokens(self, split: str) -> np.ndarray:
        """The read-only token array of "train" or "val"."""
        n = self.train_tokens if split == "train" else self.val_tokens
        if n == 0:
            return np.empty(0, dtype=self.dtype)
        return np.memmap(self.path(TRAIN if split == "train" else VAL), dtype=self.dtype, mode="r", shape=(n,))


def dtype_for(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def write_meta(meta: DataMeta):
    record = dataclasses.asdict(meta)
    del record["dir"]
    if record["source"] is None:   # prepared dirs keep the meta.json they always had
        del record["source"]
    atomic.write_text(meta.path(META), json.dumps(record, indent=1) + "\n")


def load_meta(data_dir) -> DataMeta:
    """Read and check a prepared data dir; raise DataError saying what is wrong and how to fix it."""
    d = str(data_dir)
    hint = _PREPARE_HINT.format(d=d)
    if not os.path.isdir(d):
        raise DataError(f"data dir {d!r} does not exist; {hint}")
    meta_path = os.path.join(d, META)
    if not os.path.isfile(meta_path):
        raise DataError(f"{meta_path} is missing (never prepared, or the prepare was interrupted); {hint}")
    try:
        with open(meta_path) as f:
            record = json.load(f)
        meta = DataMeta(dir=d, **record)
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"{meta_path} is unreadable ({type(e).__name__}); {hint}") from None
    if meta.format != FORMAT:
        raise DataError(f"{meta_path} has format {meta.format}, this code reads {FORMAT}; {hint}")
    _check_tokenizer(meta, hint)
    for split, name, n in (("train", TRAIN, meta.train_tokens), ("val", VAL, meta.val_tokens)):
        _check_tokens(meta, split, meta.path(name), n, hint)
    return meta


def _check_tokenizer(meta, hint):
    path = meta.tokenizer_path
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing; {hint}")
    if file_sha256(path) != meta.tokenizer_sha256:
        raise DataError(f"{path} does not match the sha256 in {META}: the tokens were made with another "
                        f"tokenizer; {hint}")


def _check_tokens(meta, split, path, n, hint):
    itemsize = np.dtype(meta.dtype).itemsize
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if size != n * itemsize:
        what = "missing" if size is None else f"{size} bytes, expected {n * itemsize} ({n} tokens)"
        raise DataError(f"{path} is {what}: truncated or replaced; {hint}")
    if n == 0:
        return
    tokens = meta.tokens(split)
    # A cheap spot check: a few blocks spread over the file, and every document ends with EOS.
    starts = np.linspace(0, max(n - 4096, 0), num=9, dtype=np.int64)
    top = max(int(tokens[s:s + 4096].max()) for s in starts)
    if top >= meta.vocab_size:
        raise DataError(f"{path} is corrupt: token id {top} >= vocab size {meta.vocab_size}; {hint}")
    if int(tokens[-1]) != meta.eos_id:
        raise DataError(f"{path} is corrupt: it does not end with EOS (id {meta.eos_id}); {hint}")
