"""Megatron's indexed dataset: PREFIX.bin (the tokens back to back) and PREFIX.idx (where each sequence lies and
which sequences form a document), as megatron.core.datasets.indexed_dataset reads and writes them.

The layout of the .idx, little-endian: the 9-byte magic, version u64 (1), dtype code u8, sequence count u64,
document count u64 (documents + 1), then int32 sequence lengths, int64 byte pointers into the .bin, and int64
document indices (the sequence index at which each document starts, and the count at the end). Written and read
here with numpy, so preparing and opening data never imports megatron (which takes seconds)."""

import os
import struct

import numpy as np

from megarecipe import atomic
from megarecipe.data.errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
CODES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64", 7: "float32", 8: "uint16"}
_HEADER = len(MAGIC) + 8 + 1 + 8 + 8


def write_index(idx_path, lengths, dtype: str) -> None:
    """One sequence per document (what our data dirs hold): document i is sequence i."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and lengths.max() >= 1 << 31:
        raise DataError(f"{idx_path}: a document of {int(lengths.max())} tokens is over the format's 2^31 limit")
    pointers = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1] * np.dtype(dtype).itemsize, out=pointers[1:])
    code = {v: k for k, v in CODES.items()}[dtype]
    n = len(lengths)
    header = MAGIC + struct.pack("<Q", 1) + struct.pack("<B", code) + struct.pack("<Q", n) + struct.pack("<Q", n + 1)
    body = lengths.astype(np.int32).tobytes() + pointers.tobytes() + np.arange(n + 1, dtype=np.int64).tobytes()
    atomic.write_bytes(idx_path, header + body)


class Index:
    """A read .idx: dtype, sequence lengths and pointers, document indices (memory-mapped)."""

    def __init__(self, idx_path):
        self.path = str(idx_path)
        fix = "give the PREFIX of a PREFIX.bin + PREFIX.idx pair written by Megatron's preprocess_data.py"
        try:
            with open(self.path, "rb") as f:
                head = f.read(_HEADER)
        except OSError as e:
            raise DataError(f"{self.path}: cannot read ({e.strerror}); {fix}") from None
        if len(head) < _HEADER or head[: len(MAGIC)] != MAGIC:
            raise DataError(f"{self.path} is not a Megatron index (no MMIDIDX header); {fix}")
        version, code = struct.unpack("<Q", head[9:17])[0], head[17]
        if version != 1 or code not in CODES:
            raise DataError(f"{self.path}: index version {version}, dtype code {code} are not supported; {fix}")
        self.dtype = CODES[code]
        self.sequence_count, doc_count = struct.unpack("<QQ", head[18:34])
        size = os.path.getsize(self.path)
        need = _HEADER + self.sequence_count * 12 + doc_count * 8
        if size < need:
            raise DataError(f"{self.path} is {size} bytes, its header says at least {need}: truncated; {fix}")
        buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        n = self.sequence_count
        self.lengths = buf[_HEADER : _HEADER + 4 * n].view(np.int32)
        self.pointers = buf[_HEADER + 4 * n : _HEADER + 12 * n].view(np.int64)
        self.document_indices = buf[_HEADER + 12 * n : _HEADER + 12 * n + 8 * doc_count].view(np.int64)
        if doc_count < 1 or self.document_indices[-1] != n or self.document_indices[0] != 0:
            raise DataError(f"{self.path}: document indices do not span its {n} sequences; {fix}")

    @property
    def documents(self) -> int:
        return len(self.document_indices) - 1

    def document_span(self, i) -> tuple:
        """(first token, token count) of document i in the .bin."""
        a, b = int(self.document_indices[i]), int(self.document_indices[i + 1])
        if a == b:
            return 0, 0
        start = int(self.pointers[a]) // np.dtype(self.dtype).itemsize
        return start, int(self.lengths[a:b].sum(dtype=np.int64))
