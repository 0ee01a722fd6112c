"""Preparing a large JSON Lines corpus: tokens/s per worker against the tokenizer's own batch-encode speed, the
gain from 1 to 2 workers, peak memory from 50 MB to 500 MB of input, meta.json's size; and what that projects
for 200M and 10B tokens on a 16-core node.

  python benchmarks/prepare_bench.py [--sizes 50 500] [--workers 1 2] [--work /tmp/prepare_bench] [--write]

The corpus is generated: documents of 3-30 paragraphs drawn at random from the embedded corpus (so they do not
repeat), as {"id", "url", "text", "meta"} records, zstd-compressed; --sizes are its uncompressed MB. The
tokenizer is an 8k sentencepiece BPE trained on the embedded corpus. Each prepare runs as `tools/prepare_data.py`
in a subprocess; peak RSS is the most its process tree (main + workers) held at once, sampled every 0.2 s."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_corpus(path: Path, mb: int, seed: int = 0) -> int:
    """Write `mb` MB of JSON Lines (uncompressed) as .jsonl.zst; return the number of records."""
    import numpy as np
    import zstandard

    from megarecipe.data.corpus import default_files
    from megarecipe.data.tokenizer import read_text

    paras = [p for f in default_files() for p in read_text(f).split("\n\n") if len(p) > 40]
    rng = np.random.default_rng(seed)
    target, written, n = mb * 1_000_000, 0, 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f, zstandard.ZstdCompressor(level=3).stream_writer(f) as z:
        while written < target:
            picks = rng.integers(0, len(paras), size=int(rng.integers(3, 31)))
            record = {
                "id": n,
                "url": f"https://example.org/doc/{n}",
                "text": "\n\n".join(paras[i] for i in picks),
                "meta": {"lang": "en", "source": "generated"},
            }
            line = (json.dumps(record) + "\n").encode()
            z.write(line)
            written += len(line)
            n += 1
    os.replace(tmp, path)
    return n


def reference_speed(corpus: Path, tokenizer: str, mb: int = 10) -> float:
    """Tokens/s of the tokenizer's own batch encode, one thread, on the first `mb` MB of the corpus's text."""
    import zstandard

    from megarecipe.data.tokenizer import load_tokenizer, normalise

    texts, size = [], 0
    with open(corpus, "rb") as f:
        import io

        for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8"):
            texts.append(normalise(json.loads(line)["text"]))
            size += len(texts[-1])
            if size >= mb * 1_000_000:
                break
    tok = load_tokenizer(tokenizer)
    start = time.perf_counter()
    tokens = sum(len(ids) for ids in tok.encode_batch(texts))
    return tokens / (time.perf_counter() - start)


def run_prepare(corpus: Path, out: Path, tokenizer: str, workers: int) -> dict:
    import psutil

    cmd = [
        sys.executable,
        str(REPO / "tools" / "prepare_data.py"),
        "--input",
        str(corpus),
        "--out",
        str(out),
        "--tokenizer",
        tokenizer,
        "--workers",
        str(workers),
        "--val-tokens",
        "1000000",
        "--no-progress",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"),
    )
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        p = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    t.join()
    if proc.returncode:
        raise SystemExit(f"prepare failed: {stderr.strip()}")
    meta = json.loads((out / "meta.json").read_text())
    return {
        "wall": wall,
        "tokens": meta["train_tokens"] + meta["val_tokens"],
        "peak": peak,
        "meta_bytes": (out / "meta.json").stat().st_size,
        "documents": meta["train_documents"] + meta["val_documents"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 500], help="uncompressed MB of JSON Lines")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", default="/tmp/prepare_bench")
    ap.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    a = ap.parse_args()

    from bench_common import publish

    from megarecipe.data.corpus import default_files
    from megarecipe.data.tokenizer import train_tokenizer

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = str(work / "tok.model")
    if not os.path.isfile(tokenizer):
        train_tokenizer(default_files(), str(work / "tok"), 8000)
    rows, results, refs = [], {}, []
    for mb in a.sizes:
        corpus = work / f"corpus{mb}.jsonl.zst"
        if not corpus.exists():
            make_corpus(corpus, mb)
        for w in a.workers:
            # the reference just before each run: on a shared machine the load moves between runs
            ref = reference_speed(corpus, tokenizer)
            refs.append(ref)
            r = run_prepare(corpus, work / f"data{mb}_{w}", tokenizer, w)
            results[mb, w] = r
            rate = r["tokens"] / r["wall"]
            rows.append(
                f"| {mb} MB ({corpus.stat().st_size / 1e6:.0f} MB .zst) | {w} | {r['tokens'] / 1e6:,.1f}M | "
                f"{r['documents']:,} | {r['wall']:.1f} | {rate / 1e6:.2f}M | {rate / w / ref:.2f}x | "
                f"{r['peak'] / 2**20:,.0f} | {r['meta_bytes'] / 1e3:.1f} kB |"
            )
            print(rows[-1], flush=True)
    same = {}
    for mb in a.sizes:
        files = [(work / f"data{mb}_{w}" / "train.bin").read_bytes() for w in a.workers]
        same[mb] = all(f == files[0] for f in files)
    lines = [
        "| input | workers | tokens | documents | wall s | tokens/s | per worker vs tokenizer | peak RSS MiB "
        "| meta.json |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Tokenizer's own batch encode (sentencepiece, 1 thread, first 10 MB of the same text, measured just "
        f"before each run): {', '.join(f'{x / 1e6:.2f}M' for x in refs)} tokens/s. "
        f"train.bin identical across --workers {a.workers}: "
        f"{', '.join(f'{mb} MB: {same[mb]}' for mb in a.sizes)}.",
    ]
    big = max(a.sizes)
    if (big, 1) in results and (big, 2) in results:
        one, two = results[big, 1], results[big, 2]
        speedup = one["wall"] / two["wall"]
        per_worker = one["tokens"] / one["wall"]
        lines.append(f"1 -> 2 workers on {big} MB: {speedup:.2f}x.")
        for target in (200e6, 10e9):
            hours = target / (16 * per_worker * min(speedup / 2, 1.0)) / 3600
            lines.append(
                f"Projected for {target / 1e9:g}B tokens on 16 cores (16 x the 1-worker rate x the measured "
                f"2-worker efficiency {min(speedup / 2, 1.0):.2f}): {hours * 60:,.0f} min; meta.json stays "
                f"at one summary per input file."
            )
    table = "\n".join(lines)
    publish(
        f"`python benchmarks/prepare_bench.py --sizes {' '.join(map(str, a.sizes))} --workers "
        f"{' '.join(map(str, a.workers))}{' --write' if a.write else ''}`\n\n{table}",
        "Preparing a corpus",
        a.write,
    )


if __name__ == "__main__":
    main()
