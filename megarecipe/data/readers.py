"""Inputs -> sources -> chunks of records, streamed: text files, JSON Lines / JSON and CSV / TSV (optionally .gz
or .zst), Parquet, Arrow files, and folders written by `datasets`' save_to_disk; globs and folders of any of them.

The main process cuts every source into chunks of about CHUNK_BYTES (raw lines for JSON, column values for
tables, normalised blocks for text); `records(chunk, text_key)` turns one into (record, text, problem) triples
wherever it runs (a tokenizing worker, or the tokenizer trainer). Nothing holds a whole file."""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
from dataclasses import dataclass

from megarecipe.data.errors import DataError
from megarecipe.data.tokenizer import file_sha256, normalise

FORMATS = ("text", "jsonl", "csv", "tsv", "parquet", "arrow", "datasets")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".arrow": "arrow"}
COMPRESSED = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
REFUSED = (".bz2", ".xz", ".zip", ".tar", ".7z", ".lz4")
BLOCK_CHARS = 256 * 1024  # a text file over this many characters becomes several documents
CHUNK_BYTES = 1 << 20
CSV_BLOCK_BYTES = 16 << 20  # pyarrow parses CSV a block at a time; one record must fit in a block
TABLE_ROWS = 256
KNOWN = (
    "*.txt, *.md, *.rst, *.jsonl, *.json, *.csv, *.tsv, *.parquet, *.arrow (JSON and CSV also .gz/.zst), or a "
    "datasets folder"
)


@dataclass
class Source:
    path: str
    format: str
    compression: str | None = None
    split: str | None = None  # the split of a DatasetDict folder
    index: int = 0  # place in the whole input list (so shards agree on it)
    bytes: int = 0

    @property
    def name(self) -> str:
        return f"{self.path}[{self.split}]" if self.split else self.path


@dataclass
class Chunk:
    source: int
    kind: str  # "lines" (raw JSON lines), "objects" (of a JSON array), "cells" (of a table's column),
    items: list  # "texts" (normalised text blocks); (record number, payload) pairs
    pos: int  # bytes of the source consumed when the chunk was cut (for progress)
    rest: str = ""  # for cells: the rest of a dotted --text-key, looked up in each cell


def _split_suffix(path: str) -> tuple[str, str | None]:
    base, ext = os.path.splitext(path.lower())
    if ext in COMPRESSED:
        return os.path.splitext(base)[1], COMPRESSED[ext]
    return ext, None


def detect(path: str, fmt: str | None) -> Source:
    if os.path.isdir(path):
        if fmt not in (None, "datasets") or not is_datasets_dir(path):
            raise DataError(
                f"--input {path}: a folder here must be a `datasets` save_to_disk folder "
                f"(state.json or dataset_dict.json); give its files instead"
            )
        return Source(path, "datasets")
    ext, compression = _split_suffix(path)
    if path.lower().endswith(REFUSED):
        raise DataError(
            f"--input {path}: {os.path.splitext(path)[1]} archives are not read; decompress it, or "
            f"recompress as .gz or .zst"
        )
    if fmt is None:
        fmt = "jsonl" if ext in JSON_SUFFIXES else TABLE_SUFFIXES.get(ext, "text")
    if compression and fmt in ("parquet", "arrow"):
        raise DataError(f"--input {path}: a compressed {fmt} file is not read; {fmt} compresses itself, decompress it")
    if fmt == "datasets":
        raise DataError(f"--input {path}: --format datasets takes a save_to_disk folder, not a file")
    return Source(path, fmt, compression, bytes=os.path.getsize(path))


def is_datasets_dir(path) -> bool:
    return any(os.path.isfile(os.path.join(path, n)) for n in ("state.json", "dataset_dict.json"))


def _listed(folder: str, fmt: str | None) -> list[str]:
    """A folder's readable files and datasets folders, recursively, sorted; hidden names skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if root != folder and is_datasets_dir(root):
            found.append(root)
            dirs[:] = []
            continue
        for f in files:
            ext, _ = _split_suffix(f)
            if f.startswith("."):
                continue
            if fmt is not None and fmt != "datasets" or ext in TEXT_SUFFIXES + JSON_SUFFIXES + tuple(TABLE_SUFFIXES):
                found.append(os.path.join(root, f))
    return sorted(found)


def expand_inputs(inputs, fmt: str | None = None) -> list[Source]:
    """Files as given, globs as their matches, folders as the readable files under them; every one detected."""
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    paths = []
    for item in map(str, inputs):
        if any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise DataError(f"--input {item}: the pattern matches nothing")
        else:
            matches = [item]
        for p in matches:
            if os.path.isdir(p) and not is_datasets_dir(p):
                inside = _listed(p, fmt)
                if not inside:
                    raise DataError(f"--input {p}: no readable files in this folder ({KNOWN})")
                paths += inside
            elif os.path.exists(p):
                paths.append(p)
            else:
                raise DataError(f"--input {p}: no such file or folder")
    if not paths:
        raise DataError("no input given; pass --input FILE_OR_DIR... or --default")
    sources = []
    for p in dict.fromkeys(paths):
        s = detect(p, fmt)
        if s.format == "text" and fmt is None:
            _refuse_json_text(p, s.compression)
        if s.format == "datasets":
            sources += _dataset_splits(s)
        else:
            sources.append(s)
    for k, s in enumerate(sources):
        s.index = k
    return sources


def _refuse_json_text(path, compression):
    """A text file whose first lines are JSON objects would train on keys, quotes and escapes."""
    lines, f_raw = [], open_binary(path, compression)
    with f_raw[0] as f:
        for line in f:
            if line.strip():
                lines.append(line)
            if len(lines) == 3 or f_raw[1].n > 1 << 20:
                break
    try:
        looks = bool(lines) and all(isinstance(json.loads(x), dict) for x in lines)
    except ValueError:
        looks = False
    if looks:
        raise DataError(
            f"--input {path}: its first lines are JSON objects; pass --format jsonl (and --text-key KEY "
            f'if the text is not under "text"), or --format text to read it as plain text'
        )


def _dataset_splits(s: Source) -> list[Source]:
    dict_file = os.path.join(s.path, "dataset_dict.json")
    if not os.path.isfile(dict_file):
        return [Source(s.path, "datasets", bytes=_folder_bytes(s.path))]
    try:
        with open(dict_file) as f:
            splits = json.load(f)["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{dict_file} is unreadable; save the dataset again with save_to_disk") from None
    return [Source(s.path, "datasets", split=k, bytes=_folder_bytes(os.path.join(s.path, k))) for k in splits]


def _folder_bytes(folder) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)


class _Counting(io.RawIOBase):
    """A raw file that counts the bytes read from it (the position in a compressed file)."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        n = self.f.readinto(b)
        self.n += n or 0
        return n

    def close(self):
        self.f.close()
        super().close()


def open_binary(path, compression):
    """(a binary stream of the decompressed bytes, the counter of raw bytes read)."""
    raw = _Counting(open(path, "rb"))
    if compression == "gz":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw), 1 << 20), raw
    if compression == "zst":
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20, closefd=True)
        return io.BufferedReader(stream, 1 << 20), raw
    return io.BufferedReader(raw, 1 << 20), raw


def chunks(s: Source, text_key: str):
    """The chunks of one source, in order."""
    try:
        if s.format == "text":
            yield from _text_chunks(s)
        elif s.format == "jsonl":
            yield from _json_chunks(s)
        elif s.format in ("csv", "tsv"):
            yield from _csv_chunks(s, text_key)
        else:
            yield from _table_chunks(s, text_key)
    except (OSError, EOFError) as e:  # a truncated .gz / .zst, an unreadable file
        raise DataError(
            f"{s.name}: cannot be read to the end ({type(e).__name__}: {str(e)[:120]}); check or replace the file"
        ) from None
    except Exception as e:
        if "straddl" in str(e):  # pyarrow.csv: a row longer than a block
            raise DataError(
                f"{s.name}: a row is over {CSV_BLOCK_BYTES >> 20} MB, or a quote is left open; close "
                f"the quote, or give such long texts as JSON Lines"
            ) from None
        if type(e).__module__.startswith(("zstandard", "pyarrow")):
            raise DataError(
                f"{s.name}: cannot be read ({type(e).__name__}: {str(e)[:120]}); check or replace the file"
            ) from None
        raise


def _json_chunks(s: Source):
    f, raw = open_binary(s.path, s.compression)
    with f:
        head = f.peek(64)[:64].lstrip()
        if head[:1] == b"[":  # a JSON array, not lines: read whole (it cannot be streamed line by line)
            try:
                objects = json.load(f)
            except ValueError as e:
                raise DataError(f"{s.name}: not valid JSON ({e}); fix it or give JSON Lines") from None
            for start in range(0, len(objects), TABLE_ROWS):
                yield Chunk(s.index, "objects", list(enumerate(objects[start : start + TABLE_ROWS], start)), raw.n)
            return
        items, size = [], 0
        for n, line in enumerate(f, 1):
            items.append((n, line))
            size += len(line)
            if size >= CHUNK_BYTES:
                yield Chunk(s.index, "lines", items, raw.n)
                items, size = [], 0
        if items:
            yield Chunk(s.index, "lines", items, raw.n)


class InvalidRow(str):
    """A CSV row pyarrow could not parse (wrong number of fields): a bad record, with what was wrong."""


def _csv_chunks(s: Source, text_key: str):
    """The --text-key column, streamed a block at a time; read as bytes, so a cell that is not UTF-8 is one bad
    record (not a failed file); rows of the wrong width are bad records too. Rows that parse are numbered from 0
    after the header; one that does not is named by its text (pyarrow gives no line number)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    delimiter = "\t" if s.format == "tsv" else ","

    def reader(columns=None):
        f, raw = open_binary(s.path, s.compression)
        invalid = []

        def on_invalid(row):
            invalid.append(
                InvalidRow(
                    f"a row of {row.actual_columns} fields where the header has "
                    f"{row.expected_columns}: {row.text[:60]!r}"
                )
            )
            return "skip"

        options = dict(
            read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
            ),
        )
        if columns:
            options["convert_options"] = pcsv.ConvertOptions(
                include_columns=columns, column_types={c: pa.binary() for c in columns}
            )
        return pcsv.open_csv(f, **options), f, raw, invalid

    head, f, _, _ = reader()
    columns = head.schema.names
    f.close()
    if text_key not in columns:
        raise DataError(
            f"{s.name} has no column {text_key!r} (columns: {', '.join(columns[:12])}); pass "
            f"--text-key COLUMN, or leave this file out of --input"
        )
    batches, f, raw, invalid = reader([text_key])
    done = 0
    with f:
        for batch in batches:
            values = batch.column(0).to_pylist()
            for start in range(0, len(values), TABLE_ROWS):
                part = values[start : start + TABLE_ROWS]
                yield Chunk(s.index, "cells", list(enumerate(part, done)), raw.n)
                done += len(part)
            if invalid:
                yield Chunk(s.index, "cells", [(-1, row) for row in invalid], raw.n)
                invalid.clear()


def _text_chunks(s: Source):
    """Blocks of whole paragraphs, at most about BLOCK_CHARS each (a smaller file is one document); a block
    with bytes that are not UTF-8 is a bad record."""
    f, raw = open_binary(s.path, s.compression)
    items, size, k = [], 0, -1
    with f:
        for k, (text, problem) in enumerate(_blocks(_paragraphs(f))):
            items.append((k, (text, problem)))
            size += len(text)
            if size >= CHUNK_BYTES:
                yield Chunk(s.index, "texts", items, raw.n)
                items, size = [], 0
    if items or k < 0:  # an empty file is one empty record
        yield Chunk(s.index, "texts", items or [(0, ("", None))], raw.n)


def _paragraphs(f):
    """(paragraph, problem) from a binary text stream, normalised as tokenizer.normalise does."""
    lines, problem = [], None
    for n, line in enumerate(f, 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            problem = problem or f"line {n}: not UTF-8 ({e.reason} at byte {e.start}); convert it, e.g. iconv -t utf-8"
            text = line.decode("utf-8", "replace")
        if n == 1:
            text = text.lstrip("\ufeff")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        for part in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
            part = normalise(part)
            if part:
                lines.append(part)
            elif lines:
                yield "\n".join(lines), problem
                lines, problem = [], None
    if lines:
        yield "\n".join(lines), problem


def _blocks(paragraphs, max_chars=None):
    """Paragraphs joined by a blank line into blocks of at most about max_chars; an overlong paragraph is cut at
    its lines. The same blocks as split_blocks on the whole text."""
    max_chars = max_chars or BLOCK_CHARS
    current, size, problem = [], 0, None
    for para, bad in paragraphs:
        sep = "\n\n"
        for piece in [para] if len(para) <= max_chars else para.split("\n"):
            if current and size + len(sep) + len(piece) > max_chars:
                yield "".join(current), problem
                current, size, problem = [], 0, None
            if current:
                current.append(sep)
                size += len(sep)
            current.append(piece)
            size += len(piece)
            problem = problem or bad
            sep = "\n"
    if current:
        yield "".join(current), problem


def split_blocks(text: str, max_chars=None) -> list:
    """Cut normalised text at paragraph (else line) boundaries into blocks of at most about max_chars."""
    return [b for b, _ in _blocks(((p, None) for p in text.split("\n\n") if p), max_chars)]


def _table_chunks(s: Source, text_key: str):
    columns = _columns(s)
    top, rest = (text_key, "") if text_key in columns else (text_key.split(".")[0], text_key.partition(".")[2])
    if top not in columns:
        raise DataError(
            f"{s.name} has no column {top!r} (columns: {', '.join(columns[:12])}); pass --text-key "
            f"COLUMN (a dotted key reaches into a struct column)"
        )
    rows, done = _row_count(s), 0
    for batch in _batches(s, top):
        values = batch.to_pylist()
        yield Chunk(
            s.index, "cells", list(enumerate(values, done)), s.bytes * (done + len(values)) // max(rows, 1), rest
        )
        done += len(values)


def _columns(s: Source) -> list:
    import pyarrow.parquet as pq

    if s.format == "parquet":
        return pq.ParquetFile(s.path).schema_arrow.names
    return list(_arrow_table(s).column_names)


def _row_count(s: Source) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(s.path).metadata.num_rows if s.format == "parquet" else _arrow_table(s).num_rows


def _arrow_table(s: Source):
    """A memory-mapped table: an .arrow file (stream or file format), or a datasets folder's data."""
    import pyarrow as pa

    if s.format == "arrow":
        source = pa.memory_map(s.path)
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(pa.memory_map(s.path)).read_all()
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{s.name}: reading a `datasets` folder needs the datasets package; pip install "
            f"'datasets>=3.6' (or make setup)"
        ) from None
    datasets.disable_progress_bars()
    ds = datasets.load_from_disk(os.path.join(s.path, s.split) if s.split else s.path)
    if ds._indices is not None:  # a selection saved without flattening
        ds = ds.flatten_indices()
    return ds.data.table


def _batches(s: Source, column):
    if s.format == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(s.path).iter_batches(batch_size=TABLE_ROWS, columns=[column]):
            yield batch.column(0)
    else:
        col = _arrow_table(s).column(column)
        for start in range(0, len(col), TABLE_ROWS):
            yield col.slice(start, TABLE_ROWS)


def _lookup(obj, text_key):
    """obj[text_key], or the dotted path through nested objects; (value, problem)."""
    if isinstance(obj, dict) and text_key in obj:
        return obj[text_key], None
    for part in text_key.split("."):
        if not isinstance(obj, dict):
            return None, f"no key {text_key!r} (a {type(obj).__name__} on the way)"
        if part not in obj:
            keys = ", ".join(list(obj)[:8])
            return None, f"no key {text_key!r} (keys: {keys}); pass --text-key KEY"
        obj = obj[part]
    return obj, None


def records(chunk: Chunk, text_key: str):
    """(record number, normalised text or None, problem or None) for every record of the chunk; blank JSON lines
    are no records."""
    for n, payload in chunk.items:
        if chunk.kind == "texts":
            text, problem = payload
            yield n, (None if problem else text), problem
            continue
        if chunk.kind == "lines":
            if not payload.strip():
                continue
            try:
                payload = json.loads(payload)
            except ValueError as e:
                what = "not UTF-8" if isinstance(e, UnicodeDecodeError) else "not JSON"
                yield n, None, f"{what} ({str(e)[:80]})"
                continue
        if isinstance(payload, InvalidRow):
            yield n, None, str(payload)
            continue
        if isinstance(payload, bytes):  # a CSV cell
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, None, f"not UTF-8 ({e.reason} at byte {e.start}); convert it, e.g. iconv -t utf-8"
                continue
        if chunk.kind == "cells":  # the column's value; a dotted key goes on into it
            value, problem = _lookup(payload, chunk.rest) if chunk.rest else (payload, None)
        elif not isinstance(payload, dict):
            value, problem = None, f"a JSON {type(payload).__name__}, not an object"
        else:
            value, problem = _lookup(payload, text_key)
        if problem is None and not isinstance(value, str):
            problem = f"{text_key!r} is {'null' if value is None else 'a ' + type(value).__name__}, not a string"
        yield n, (None if problem else normalise(value)), problem


def record_name(s: Source, n: int) -> str:
    """How a problem names its record: a JSON line, a table row, a text block."""
    if s.format == "jsonl":
        return f"{s.name}:{n}"
    if s.format == "text":
        return s.name if n == 0 else f"{s.name} block {n}"
    return s.name if n < 0 else f"{s.name} row {n}"


def source_sha256(s: Source) -> str:
    """The sha256 of the file; of a datasets folder, of its files' names and hashes."""
    if s.format != "datasets":
        return file_sha256(s.path)
    folder = os.path.join(s.path, s.split) if s.split else s.path
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            h.update(
                f"{os.path.relpath(os.path.join(root, f), folder)} {file_sha256(os.path.join(root, f))}\n".encode()
            )
    return h.hexdigest()
