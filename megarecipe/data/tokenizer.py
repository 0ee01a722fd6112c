"""Sentencepiece BPE tokenizer: train, load, hash; and the text normalisation applied before it."""
import hashlib
import io
import os
import re

import sentencepiece as spm

from megarecipe import atomic
from megarecipe.data.errors import DataError

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_text(path) -> str:
    """A file's text, normalised: one space between words, no indentation, at most one blank line in a row.

    Newlines are kept (verse and speaker lines carry meaning); sentencepiece then applies NFKC."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                        f"convert it, e.g. iconv -t utf-8") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def paragraphs(text: str):
    return (p for p in text.split("\n\n") if p)


def train_tokenizer(files, out_prefix, vocab_size, threads=2) -> str:
    """Train a BPE model on the paragraphs of `files`; write `out_prefix.model` atomically; return its path."""
    def sentences():
        for path in files:
            yield from paragraphs(read_text(path))

    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(), model_writer=model, vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1,
            user_defined_symbols=["\n"],          # a newline is one token and never merged into words
            max_sentence_length=1 << 20,          # the default (4192 bytes) silently drops long paragraphs
            input_sentence_size=5_000_000, shuffle_input_sentence=True,
            num_threads=threads, minloglevel=2)
    except RuntimeError as e:
        msg = str(e)
        if "Vocabulary size too high" in msg:
            limit = msg.rsplit("<=", 1)[-1].strip(" .")
            raise DataError(f"--vocab-size {vocab_size} is too large for this little text (at most {limit}); "
                            f"lower it or add text") from None
        if "sentences_.empty()" in msg:
            raise DataError("no text to train the tokenizer on; give non-empty input files") from None
        raise DataError(f"sentencepiece could not train a {vocab_size}-piece tokenizer "
                        f"({msg.strip().splitlines()[-1]}); change --vocab-size") from None
    path = str(out_prefix) + ".model"
    atomic.write_bytes(path, model.getvalue())
    return path


def load_tokenizer(path) -> spm.SentencePieceProcessor:
    if not os.path.isfile(path):
        raise DataError(f"tokenizer {path} not found; give a sentencepiece .model file")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError):
        raise DataError(f"tokenizer {path} is not a sentencepiece model; give a .model file") from None
    return sp

