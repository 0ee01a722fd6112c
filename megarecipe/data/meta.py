"""meta.json: what a prepared data dir holds, and the checks run every time one is opened."""

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from megarecipe import atomic
from megarecipe.data.errors import DataError
from megarecipe.data.indexed import Index
from megarecipe.data.tokenizer import HF_CONFIG, HF_FILE, SP_FILE, file_sha256

FORMAT = 2  # 1: per-document records in meta.json and no .idx files (refused: re-run prepare_data)
META, TRAIN, VAL = "meta.json", "train.bin", "val.bin"
TRAIN_IDX, VAL_IDX = "train.idx", "val.idx"
TOKENIZER = SP_FILE  # the sentencepiece name; a Hugging Face tokenizer is HF_FILE (+ HF_CONFIG)
DATA_FILES = {META, TRAIN, VAL, TRAIN_IDX, VAL_IDX, SP_FILE, HF_FILE, HF_CONFIG}
_PREPARE_HINT = "run tools/prepare_data.py --default --out {d} (or --input FILES... --out {d})"


@dataclass
class DataMeta:
    """train.bin/.idx and val.bin/.idx are Megatron indexed datasets (prefixes DIR/train, DIR/val), one document
    per sequence, in content-hash order; the tokenizer beside them."""

    dir: str  # where it was loaded from; not stored in meta.json, so a data dir can move
    vocab_size: int
    tokenizer_sha256: str
    dtype: str  # "uint16" or "int32" (megatron's codes; Llama-3's 128k vocabulary needs int32)
    train_tokens: int
    val_tokens: int
    eos_id: int
    tokenizer: str = TOKENIZER  # its file name in the dir
    bos_id: int = -1
    train_documents: int = 0
    val_documents: int = 0
    val_tokens_requested: int = 0
    contents_sha256: str = ""  # of the tokenizer and the four token files: what a run trains on
    sources: list = field(default_factory=list)  # one summary per input: path, format, bytes, documents, ...
    skipped_bad: int = 0  # bad records dropped with --skip-bad
    format: int = FORMAT
    source: dict | None = None  # a synthetic dir's origin (teacher, temperature, top-p, seed); None = prepared text

    def path(self, name) -> str:
        return os.path.join(self.dir, name)

    @property
    def tokenizer_path(self) -> str:
        return self.path(self.tokenizer)

    def content_sha256(self) -> str:
        return self.contents_sha256

    def tokens(self, split: str) -> np.ndarray:
        """The read-only token array of "train" or "val"."""
        n = self.train_tokens if split == "train" else self.val_tokens
        if n == 0:
            return np.empty(0, dtype=self.dtype)
        return np.memmap(self.path(TRAIN if split == "train" else VAL), dtype=self.dtype, mode="r", shape=(n,))

    def index(self, split: str) -> Index:
        """The split's Megatron index: document boundaries (document i is sequence i)."""
        return Index(self.path(TRAIN_IDX if split == "train" else VAL_IDX))


def contents_sha256(data_dir, tokenizer_sha: str) -> str:
    h = hashlib.sha256(tokenizer_sha.encode())
    for name in (TRAIN, TRAIN_IDX, VAL, VAL_IDX):
        h.update(file_sha256(os.path.join(data_dir, name)).encode())
    return h.hexdigest()


def dtype_for(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "int32"


def write_meta(meta: DataMeta):
    record = dataclasses.asdict(meta)
    del record["dir"]
    if record["source"] is None:  # prepared dirs keep the meta.json they always had
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
        version = record.get("format", 1) if isinstance(record, dict) else None
        meta = DataMeta(dir=d, **record) if version == FORMAT else None
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"{meta_path} is unreadable ({type(e).__name__}); {hint}") from None
    if meta is None:
        raise DataError(
            f"{meta_path} has format {version} (an older megarecipe's), this code reads {FORMAT}: "
            f"re-run tools/prepare_data.py on its text; {hint}"
        )
    _check_tokenizer(meta, hint)
    for split, name, n in (("train", TRAIN, meta.train_tokens), ("val", VAL, meta.val_tokens)):
        _check_tokens(meta, split, meta.path(name), n, hint)
    for name, docs in ((TRAIN_IDX, meta.train_documents), (VAL_IDX, meta.val_documents)):
        _check_index(meta, meta.path(name), docs, hint)
    return meta


def _check_index(meta, path, documents, hint):
    """The header's counts, and the size they imply (reading every length would cost a pass per open)."""
    try:
        with open(path, "rb") as f:
            head = f.read(34)
    except OSError:
        raise DataError(f"{path} is missing; {hint}") from None
    ok = len(head) == 34 and head[:9] == b"MMIDIDX\x00\x00"
    n, docs = struct.unpack("<QQ", head[18:34]) if ok else (-1, -1)
    if not ok or n != documents or docs != documents + 1 or os.path.getsize(path) != 34 + 12 * n + 8 * docs:
        raise DataError(f"{path} does not index the {documents} documents {META} states: truncated or replaced; {hint}")


def _check_tokenizer(meta, hint):
    path = meta.tokenizer_path
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing; {hint}")
    if file_sha256(path) != meta.tokenizer_sha256:
        raise DataError(
            f"{path} does not match the sha256 in {META}: the tokens were made with another tokenizer; {hint}"
        )


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
    top = max(int(tokens[s : s + 4096].max()) for s in starts)
    if top >= meta.vocab_size or int(tokens[:4096].min()) < 0:
        raise DataError(f"{path} is corrupt: token id {top} >= vocab size {meta.vocab_size}; {hint}")
    if int(tokens[-1]) != meta.eos_id:
        raise DataError(f"{path} is corrupt: it does not end with EOS (id {meta.eos_id}); {hint}")
