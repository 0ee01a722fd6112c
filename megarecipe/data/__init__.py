"""Data: prepare text into token memmaps (prepare, corpus), open them (meta), serve sequences (dataset).

Names are imported lazily, so that `from megarecipe.data import DataError` does not import torch. The function
prepare is not re-exported: its name is taken by the module; use `from megarecipe.data.prepare import prepare`."""
import importlib

_WHERE = {
    "DataError": "errors", "DataMeta": "meta", "load_meta": "meta",
    "prepare_default": "corpus", "default_files": "corpus", "train_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer", "file_sha256": "tokenizer", "TokenDataset": "dataset",
    "validation_batches": "dataset", "IGNORE_INDEX": "dataset",
}
__all__ = list(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
