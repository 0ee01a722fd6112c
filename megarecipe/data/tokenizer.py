"""Tokenizers: train a sentencepiece BPE, or open one that exists (a sentencepiece .model, a Hugging Face
tokenizer.json, or a local Hugging Face tokenizer folder); one small interface over both; the text normalisation.

A data dir and an export hold their tokenizer as `tokenizer.model` (sentencepiece) or as `tokenizer.json` plus a
`tokenizer_config.json` naming its EOS (and BOS) token: so either folder is itself a Hugging Face tokenizer folder.
Documents are encoded without special tokens; the EOS id is appended after each one explicitly."""

import hashlib
import io
import json
import os
import re

from megarecipe import atomic
from megarecipe.data.errors import DataError

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SP_FILE, HF_FILE, HF_CONFIG = "tokenizer.model", "tokenizer.json", "tokenizer_config.json"
# EOS tokens of common tokenizers, tried in order when a tokenizer.json comes without a config naming one
KNOWN_EOS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "<|im_end|>")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_RUNS = re.compile(r"\n{3,}")
# anything normalise would change; most records have none, and one search is cheaper than the per-line pass
_NEEDS_WORK = re.compile(r"[\t\f\v\u00a0\r\ufeff]| {2}|^[^\S\n]|[^\S\n]$|\n{3}", re.M)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def normalise(text: str) -> str:
    """One space between words, no indentation, at most one blank line in a row; newlines kept (verse and
    speaker lines carry meaning). Sentencepiece then applies NFKC."""
    if not _NEEDS_WORK.search(text) and text[:1] != "\n" and text[-1:] != "\n":
        return text
    if text[:1] == "\ufeff":
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def read_text(path) -> str:
    """A whole text file, normalised."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); convert it, e.g. iconv -t utf-8"
        ) from None
    return normalise(text)


def paragraphs(text: str):
    return (p for p in text.split("\n\n") if p)


def train_tokenizer(files, out_prefix, vocab_size, threads=2, texts=None) -> str:
    """Train a BPE model on the paragraphs of `files` (or of `texts`, an iterable of normalised documents);
    write `out_prefix.model` atomically; return its path."""

    def sentences():
        for text in texts if texts is not None else (read_text(f) for f in files):
            yield from paragraphs(text)

    model = io.BytesIO()
    import sentencepiece as spm

    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_writer=model,
            vocab_size=vocab_size,
            model_type="bpe",
            byte_fallback=True,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_id=-1,
            user_defined_symbols=["\n"],  # a newline is one token and never merged into words
            max_sentence_length=1 << 20,  # the default (4192 bytes) silently drops long paragraphs
            input_sentence_size=5_000_000,
            shuffle_input_sentence=True,
            num_threads=threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        if "Vocabulary size too high" in msg:
            limit = msg.rsplit("<=", 1)[-1].strip(" .")
            raise DataError(
                f"--vocab-size {vocab_size} is too large for this little text (at most {limit}); lower it or add text"
            ) from None
        if "sentences_.empty()" in msg:
            raise DataError("no text to train the tokenizer on; give non-empty input files") from None
        raise DataError(
            f"sentencepiece could not train a {vocab_size}-piece tokenizer "
            f"({msg.strip().splitlines()[-1]}); change --vocab-size"
        ) from None
    path = str(out_prefix) + ".model"
    atomic.write_bytes(path, model.getvalue())
    return path


class Tokenizer:
    """encode_batch / decode / vocab_size / eos_id / bos_id over sentencepiece or Hugging Face `tokenizers`."""

    def __init__(self, path, kind, backend, eos_id, bos_id, eos_token, bos_token):
        self.path, self.kind, self._b = str(path), kind, backend  # kind: "sentencepiece" or "hf"
        self.eos_id, self.bos_id, self.eos_token, self.bos_token = eos_id, bos_id, eos_token, bos_token
        self.vocab_size = backend.get_piece_size() if kind == "sentencepiece" else backend.get_vocab_size()

    @property
    def file_name(self) -> str:
        return SP_FILE if self.kind == "sentencepiece" else HF_FILE

    def encode_batch(self, texts: list) -> list:
        if self.kind == "sentencepiece":
            return self._b.encode(texts, num_threads=1)
        return [e.ids for e in self._b.encode_batch(texts, add_special_tokens=False)]

    def encode(self, text: str) -> list:
        return self.encode_batch([text])[0]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self._b.decode(ids) if self.kind == "sentencepiece" else self._b.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        if self.kind == "sentencepiece":
            i = self._b.piece_to_id(token)
            return None if i == self._b.unk_id() and token != self._b.id_to_piece(i) else i
        return self._b.token_to_id(token)

    def save(self, folder) -> str:
        """Copy into `folder` under the standard name (and the config naming EOS); return the file's path."""
        out = os.path.join(folder, self.file_name)
        with open(self.path, "rb") as f:
            atomic.write_bytes(out, f.read())
        if self.kind == "hf":
            config = {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": self.eos_token,
                "bos_token": self.bos_token,
                "add_bos_token": False,
                "add_eos_token": False,
            }
            atomic.write_text(os.path.join(folder, HF_CONFIG), json.dumps(config, indent=1) + "\n")
        return out


def find_tokenizer(folder) -> str | None:
    """The tokenizer file a data dir, an export or a Hugging Face folder holds (tokenizer.json first)."""
    for name in (HF_FILE, SP_FILE):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def tokenizer_sha256(path) -> str:
    """The hash that names a tokenizer: of its file (for a folder, of the file in it)."""
    return file_sha256(find_tokenizer(path) if os.path.isdir(path) else path)


def load_tokenizer(path, eos: str | None = None) -> Tokenizer:
    """A sentencepiece .model, a tokenizer.json, or a folder holding either (offline). `eos` names the token
    appended after each document; by default the tokenizer's own (sentencepiece's eos_id, the folder's
    tokenizer_config.json, else one of KNOWN_EOS the vocabulary holds)."""
    path = str(path)
    fix = "give a sentencepiece .model, a tokenizer.json or a Hugging Face tokenizer folder"
    if os.path.isdir(path):
        found = find_tokenizer(path)
        if found is None:
            raise DataError(f"tokenizer folder {path} holds neither {HF_FILE} nor {SP_FILE}; {fix}")
        config = _read_config(os.path.join(path, HF_CONFIG))
        return _open(found, eos or _token(config.get("eos_token")), _token(config.get("bos_token")), fix)
    if not os.path.isfile(path):
        raise DataError(f"tokenizer {path} not found; {fix}")
    config = _read_config(os.path.join(os.path.dirname(path), HF_CONFIG)) if path.endswith(".json") else {}
    return _open(path, eos or _token(config.get("eos_token")), _token(config.get("bos_token")), fix)


def _open(path, eos, bos, fix) -> Tokenizer:
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if head[:1] == b"{":
        return _open_hf(path, eos, bos)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.load(path)
    except (OSError, RuntimeError):
        raise DataError(f"tokenizer {path} is neither a sentencepiece model nor a tokenizer.json; {fix}") from None
    eos_id = sp.eos_id() if eos is None else sp.piece_to_id(eos)
    if eos is not None and sp.id_to_piece(eos_id) != eos:
        raise DataError(
            f"--eos {eos!r} is no piece of tokenizer {path}; give one of its pieces, e.g. "
            f"{sp.id_to_piece(sp.eos_id()) if sp.eos_id() >= 0 else '</s>'}"
        )
    if eos_id < 0:
        raise DataError(f"tokenizer {path} defines no EOS id; train it with eos_id set or pass --eos TOKEN")
    bos_id = sp.bos_id()
    return Tokenizer(
        path,
        "sentencepiece",
        sp,
        eos_id,
        bos_id,
        sp.id_to_piece(eos_id),
        sp.id_to_piece(bos_id) if bos_id >= 0 else None,
    )


def _open_hf(path, eos, bos) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise DataError(
            f"tokenizer {path} is not a valid tokenizer.json ({str(e).splitlines()[0][:120]}); "
            f"give one that `tokenizers.Tokenizer.from_file` reads"
        ) from None
    if eos is None:
        eos = next((t for t in KNOWN_EOS if tok.token_to_id(t) is not None), None)
        if eos is None:
            special = [t.content for t in tok.get_added_tokens_decoder().values() if t.special][:8]
            raise DataError(
                f"tokenizer {path} names no EOS token; pass --eos TOKEN (its special tokens: "
                f"{', '.join(special) or 'none'})"
            )
    eos_id = tok.token_to_id(eos)
    if eos_id is None:
        raise DataError(f"--eos {eos!r} is not in the vocabulary of {path}; give one of its special tokens")
    bos_id = tok.token_to_id(bos) if bos else None
    if bos_id is None:
        bos_id, bos = -1, None
    return Tokenizer(path, "hf", tok, eos_id, bos_id, eos, bos)


def _read_config(path) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise DataError(f"{path} is not valid JSON; fix it or remove it and pass --eos TOKEN") from None


def _token(value):
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value
