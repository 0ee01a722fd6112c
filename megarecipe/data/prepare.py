"""Text files -> a data dir: tokenizer.model, train.bin, val.bin (token memmaps) and meta.json (written last).

A document is one input file, or, for a file over BLOCK_CHARS characters, one block of consecutive paragraphs
of about that size (so a single-file corpus still splits). Documents are ordered by the sha256 of their text;
the first ones, until `val_tokens` is reached, form the validation split and the rest the training split. So
the split depends on neither input order nor any seed, the two never share a document, and any prefix of the
training split mixes all sources. Each document is followed by EOS."""
import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from megarecipe.data.errors import DataError
from megarecipe.data.meta import META, TOKENIZER, TRAIN, VAL, DataMeta, dtype_for, load_meta, write_meta
from megarecipe import atomic
from megarecipe.data.tokenizer import file_sha256, load_tokenizer, read_text, train_tokenizer

SUFFIXES = (".txt", ".md", ".rst")
BLOCK_CHARS = 256 * 1024
SHOW_PROGRESS_BYTES = 8 << 20


def expand_inputs(inputs) -> list:
    """Files as given, folders as their *.txt, *.md and *.rst files (recursively, sorted)."""
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"--input {item}: no *.txt, *.md or *.rst files in this folder")
            files += found
        elif p.is_file():
            files.append(str(p))
        else:
            raise DataError(f"--input {item}: no such file or folder")
    if not files:
        raise DataError("no input given; pass --input FILE_OR_DIR... or --default")
    return list(dict.fromkeys(files))


def split_blocks(text: str, max_chars=BLOCK_CHARS) -> list:
    """Cut text at paragraph (else line) boundaries into blocks of at most about max_chars."""
    if len(text) <= max_chars:
        return [text] if text else []
    blocks, current, size = [], [], 0
    for para in text.split("\n\n"):
        sep = "\n\n"
        for piece in [para] if len(para) <= max_chars else para.split("\n"):
            if current and size + len(sep) + len(piece) > max_chars:
                blocks.append("".join(current))
                current, size = [], 0
            if current:
                current.append(sep)
                size += len(sep)
            current.append(piece)
            size += len(piece)
            sep = "\n"
    blocks.append("".join(current))
    return blocks


def prepare(inputs, out_dir, vocab_size=8000, val_tokens=200_000, tokenizer=None, progress=None,
            threads=2) -> DataMeta:
    """Tokenize `inputs` (files or folders) into `out_dir`; return the checked DataMeta.

    Everything is built in a sibling folder that replaces out_dir only once it is complete, so a failed or
    interrupted prepare leaves an existing data dir as it was.
    tokenizer: an existing sentencepiece .model to use (copied into out_dir) instead of training one.
    progress: show tqdm bars on stderr; None = only for inputs over 8 MB."""
    if val_tokens < 0:
        raise DataError(f"--val-tokens {val_tokens} must be >= 0")
    final = os.path.realpath(out_dir)
    _check_replaceable(out_dir, final)
    files = expand_inputs(inputs)
    sources, docs = _scan(files)
    if not docs:
        raise DataError(f"the {len(files)} input file(s) hold no text; give non-empty text files")
    total_bytes = sum(s["bytes"] for s in sources)
    show = progress if progress is not None else total_bytes >= SHOW_PROGRESS_BYTES

    build = f"{final}.tmp{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    os.makedirs(build)
    try:
        _build(build, files, sources, docs, vocab_size, val_tokens, tokenizer, threads, show)
        _replace_dir(build, final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return load_meta(out_dir)


def _check_replaceable(out_dir, final):
    """out_dir is replaced whole: refuse one that holds anything a data dir does not."""
    if os.path.exists(final) and not os.path.isdir(final):
        raise DataError(f"--out {out_dir} is a file; give a new folder or a data dir")
    foreign = sorted(set(os.listdir(final)) - {META, TRAIN, VAL, TOKENIZER}) if os.path.isdir(final) else []
    if foreign:
        raise DataError(f"--out {out_dir} holds {len(foreign)} file(s) that are not a data dir's (e.g. {foreign[0]}) "
                        f"and would be replaced; give a new folder or an existing data dir")


def _replace_dir(build, final):
    """Two renames: the old dir stays whole under .old until the new one has its name."""
    old = f"{final}.old{os.getpid()}"
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(build, final)
    shutil.rmtree(old, ignore_errors=True)


def _build(out_dir, files, sources, docs, vocab_size, val_tokens, tokenizer, threads, show):
    sp = _tokenizer(files, out_dir, vocab_size, tokenizer, threads, show)
    dtype = dtype_for(sp.get_piece_size())
    spool = os.path.join(out_dir, ".spool")
    _encode(sp, sources, docs, spool, dtype, threads, show)
    counts = _assemble(docs, spool, out_dir, dtype, val_tokens)
    os.remove(spool)
    by_path = {s["path"]: s for s in sources}
    for s in sources:
        s.update(train_tokens=0, val_tokens=0)
    for d in docs:
        by_path[d["source"]][f"{d['split']}_tokens"] += d["tokens"]
    meta = DataMeta(
        dir=str(out_dir), vocab_size=sp.get_piece_size(), dtype=dtype,
        tokenizer_sha256=file_sha256(os.path.join(out_dir, TOKENIZER)), train_tokens=counts["train"],
        val_tokens=counts["val"], eos_id=sp.eos_id(), bos_id=sp.bos_id(),
        sources=sources, documents=[{k: d[k] for k in ("name", "sha256", "split", "offset", "tokens")}
                                    for d in docs],
        val_tokens_requested=val_tokens, val_documents=[d["name"] for d in docs if d["split"] == "val"])
    write_meta(meta)
    load_meta(out_dir)


def _scan(files):
    """Hash every file and document; drop repeated documents (they would otherwise straddle the split)."""
    sources, docs, seen = [], [], {}
    for path in files:
        source = {"path": path, "sha256": file_sha256(path), "bytes": os.path.getsize(path), "documents": 0}
        blocks = split_blocks(read_text(path))
        for k, block in enumerate(blocks):
            name = path if len(blocks) == 1 else f"{path}#{k}"
            sha = hashlib.sha256(block.encode()).hexdigest()
            if sha in seen:
                source.setdefault("repeats", []).append(f"{name} = {seen[sha]}")
                continue
            seen[sha] = name
            docs.append({"name": name, "sha256": sha, "source": path, "block": k})
            source["documents"] += 1
        sources.append(source)
    return sources, docs


def _tokenizer(files, out_dir, vocab_size, tokenizer, threads, show):
    tok_path = os.path.join(out_dir, TOKENIZER)
    if tokenizer is None:
        if show:
            print(f"training a {vocab_size}-piece BPE tokenizer", file=sys.stderr)
        train_tokenizer(files, os.path.join(out_dir, "tokenizer"), vocab_size, threads)
        return load_tokenizer(tok_path)
    sp = load_tokenizer(tokenizer)
    if sp.eos_id() < 0:
        raise DataError(f"tokenizer {tokenizer} defines no EOS id; train it with eos_id set")
    atomic.write_bytes(tok_path, Path(tokenizer).read_bytes())
    return sp


def _encode(sp, sources, docs, spool, dtype, threads, show, batch_chars=4 << 20):
    """Encode every document, in file order, into one spool file; note each one's offset and length."""
    by_block = {(d["source"], d["block"]): d for d in docs}
    eos, offset, pending = sp.eos_id(), 0, []

    def flush(out):
        nonlocal offset
        for (doc, _), ids in zip(pending, sp.encode([text for _, text in pending], num_threads=threads), strict=True):
            ids.append(eos)
            out.write(np.asarray(ids, dtype=dtype).tobytes())
            doc.update(spool_offset=offset, tokens=len(ids))
            offset += len(ids)
        pending.clear()

    with open(spool, "wb") as out, tqdm(total=sum(s["bytes"] for s in sources), unit="B", unit_scale=True,
                                        desc="tokenizing", file=sys.stderr, disable=not show) as bar:
        for s in sources:
            for k, block in enumerate(split_blocks(read_text(s["path"]))):
                if (s["path"], k) in by_block:
                    pending.append((by_block[s["path"], k], block))
            if sum(len(text) for _, text in pending) >= batch_chars:   # a few hundred blocks at most
                flush(out)
            bar.update(s["bytes"])
        flush(out)


def _assemble(docs, spool, out_dir, dtype, val_tokens):
    """Copy documents in sha256 order: into val.bin until it holds val_tokens, then into train.bin."""
    docs.sort(key=lambda d: d["sha256"])
    tokens = np.memmap(spool, dtype=dtype, mode="r")
    counts = {"val": 0, "train": 0}
    with open(os.path.join(out_dir, VAL), "wb") as val, open(os.path.join(out_dir, TRAIN), "wb") as train:
        for d in docs:
            split = "val" if counts["val"] < val_tokens else "train"
            start = d.pop("spool_offset")
            (val if split == "val" else train).write(tokens[start:start + d["tokens"]].tobytes())
            d.update(split=split, offset=counts[split])
            counts[split] += d["tokens"]
        for f in (val, train):
            f.flush()
            os.fsync(f.fileno())
    del tokens
    if counts["train"] == 0:
        raise DataError(f"all {counts['val']} tokens went to the validation split (--val-tokens {val_tokens}); "
                        f"lower --val-tokens or add text")
    return counts
