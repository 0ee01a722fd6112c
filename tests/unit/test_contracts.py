"""One owner per contract: the names of the files a run, an export, an ensemble or a recipe leaves on disk, the
run states, the checkpoint tag pattern and the recipe's stage order are written as literals in their owner
module only; every other module of megarecipe/ names them through it. Checked over the string constants of the
code (docstrings are prose and skipped; f-string parts are checked). A constant matches when it is the literal,
or a path with the literal as one of its parts ("export/model.json")."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "megarecipe"
RUNDIR, ENSEMBLEDIR, RECIPE = "megarecipe/rundir.py", "megarecipe/ensembledir.py", "megarecipe/analysis/recipe_plan.py"
HF_DIR = "megarecipe/config/init_from.py"  # a Hugging Face directory's file names (transformers')

OWNERS = {
    "run.json": {RUNDIR},
    "config.yaml": {RUNDIR},
    "tb": {RUNDIR},
    "checkpoints": {RUNDIR},
    "run.lock": {RUNDIR},
    "memory.json": {RUNDIR},
    "latest": {RUNDIR},
    "model.json": {RUNDIR},
    "model.safetensors": {RUNDIR, HF_DIR},
    "perf/tokens_per_sec": {RUNDIR},
    "running": {RUNDIR},
    "finished": {RUNDIR},
    "interrupted": {RUNDIR},
    "not started": {RUNDIR},
    "stopped": {RUNDIR},
    # a sweep's state and a certificate's verdict are other contracts that use the same word
    "failed": {RUNDIR, "megarecipe/recipes/sweep.py", "megarecipe/recipes/certificate.py"},
    "ensemble.json": {ENSEMBLEDIR},
    "loss_vs_members.png": {ENSEMBLEDIR},
    "fits+report": {RECIPE},
    "stages.json": {RECIPE},
    "REPORT.md": {RECIPE},
}
TAG_PATTERN = re.compile(r"\\d\{8\}|:08d")  # the checkpoint tag step<8 digits>, as a regex or a format
TAG_OWNERS = {RUNDIR}


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def constants(source: str):
    """(line, text) of every string constant that is not a docstring, format specs included."""
    tree = ast.parse(source)
    skip = docstrings(tree)
    found = [
        (node.lineno, node.col_offset, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]
    return [(line, text) for line, _, text in sorted(found)]


def names(text: str, literal: str) -> bool:
    return text == literal or (not re.search(r"\s", text) and literal in text.split("/"))


def outside_owners(files: dict[str, str]) -> list[str]:
    found = []
    for path, source in files.items():
        for line, text in constants(source):
            for literal, owners in OWNERS.items():
                if path not in owners and names(text, literal):
                    found.append(f"{path}:{line}: {literal!r} (owner: {', '.join(sorted(owners))})")
            if path not in TAG_OWNERS and TAG_PATTERN.search(text) and "step" in source.splitlines()[line - 1]:
                found.append(f"{path}:{line}: the checkpoint tag pattern (owner: {RUNDIR})")
    return found


def package_files() -> dict[str, str]:
    return {f"megarecipe/{p.relative_to(PACKAGE).as_posix()}": p.read_text() for p in PACKAGE.rglob("*.py")}


def test_every_contract_literal_is_written_by_its_owner_only():
    assert not outside_owners(package_files())


def test_the_check_sees_a_literal_outside_its_owner():
    bad = {
        "megarecipe/x.py": 'import os\n\n\ndef f(d):\n    """Reads run.json."""\n'
        '    return os.path.join(d, "run.json"), f"{d}/export/model.json", "tb/"\n'
        'TAG = r"step(\\d{8})"\n'
    }
    found = outside_owners(bad)
    assert [f.split(": ", 1)[1].split(" (")[0] for f in found] == [
        "'run.json'",
        "'model.json'",
        "'tb'",
        "the checkpoint tag pattern",
    ]
    assert not outside_owners({RUNDIR: bad["megarecipe/x.py"].replace("TAG = ", "X = ").replace("step(\\d{8})", "")})
    assert not outside_owners({"megarecipe/y.py": 'print("the run finished early")\n'})  # prose, not a name


def test_every_error_class_has_the_common_base():
    """A tool catches errors.MegarecipeError (one line, exit 2 or 3) and lets nothing else through as a line: so
    every *Error class of the package derives from errors.UserError or errors.RunError, directly or through
    another of the package's error classes."""
    builtin = {"Exception", "BaseException", "ValueError", "RuntimeError", "OSError", "KeyError", "TypeError"}
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                bases = {ast.unparse(b).split(".")[-1] for b in node.bases}
                if bases & builtin and path.name != "errors.py":
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}: {node.name}({', '.join(sorted(bases))})")
    assert not wrong, wrong
