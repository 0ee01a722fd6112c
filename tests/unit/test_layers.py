"""The layers follow the data: analysis (reads run dirs), launch (starts runs) and recipes (create runs) never
import the training stack, and the training stack never imports them. Checked over the static import graph,
imports inside functions included; relative imports are resolved, and importing a module counts as importing
every package above it (Python runs their __init__ first)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "megarecipe"
TRAINING_STACK = ("megarecipe.train", "megarecipe.parallel", "megatron", "deepspeed")
UPPER = ("megarecipe.analysis", "megarecipe.launch", "megarecipe.recipes")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def with_parents(name: str) -> set[str]:
    """`a.b.c` and the packages it runs on import: `a.b`, `a`."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Every module the source names in an import statement, absolute, with the packages above each."""
    package = module if is_package else module.rpartition(".")[0]
    found = set(with_parents(package)) if package else set()  # a module's own packages run before it
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found |= with_parents(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    return {
        module_name(p): imports_of(p.read_text(), module_name(p), p.name == "__init__.py")
        for p in PACKAGE.rglob("*.py")
    }


def reachable(start: str, edges: dict[str, set[str]]) -> dict[str, str]:
    """Every module reachable from `start`, each with the module that imports it."""
    seen, todo = {start: start}, [start]
    while todo:
        here = todo.pop()
        for name in edges.get(here, ()):
            if name not in seen:
                seen[name] = here
                if name in edges:
                    todo.append(name)
    return seen


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module in [m for m in edges if under(m, UPPER)]:
        bad = {name: via for name, via in reachable(module, edges).items() if under(name, TRAINING_STACK)}
        if bad:
            found.append(f"{module} reaches the training stack: " + ", ".join(f"{n} (via {v})" for n, v in bad.items()))
    return found


# Bottom to top; a module imports only from its own layer or the layers below. Entry points (`__main__`) are tools.
LAYERS = (
    ("megarecipe", "megarecipe.errors", "megarecipe.system", "megarecipe.atomic", "megarecipe.rank_errors"),
    ("megarecipe.config", "megarecipe.rundir", "megarecipe.ensembledir"),
    ("megarecipe.data",),
    ("megarecipe.model",),
    ("megarecipe.parallel",),
    ("megarecipe.distill",),
    ("megarecipe.preflight",),
    ("megarecipe.train",),
    ("megarecipe.launch", "megarecipe.analysis"),
    ("megarecipe.plan", "megarecipe.recipes"),
    ("megarecipe.cli",),
)


def layer_of(name: str) -> int | None:
    if name.endswith(".__main__"):
        return len(LAYERS) - 1
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or (p != "megarecipe" and name.startswith(p + "."))) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return best[0] if best else None


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports that run up the layers, as 'a -> b'."""
    found = []
    for module, names in edges.items():
        here = layer_of(module)
        for name in names:
            there = layer_of(name)
            if name.startswith("megarecipe") and (here is None or there is None or there > here):
                found.append(f"{module} -> {name}")
    return sorted(found)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import circles between the package's modules (Tarjan's strongly connected components of size > 1)."""
    nodes = [m for m in edges]
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges or w == v or v.startswith(w + "."):  # a module's own packages are not a circle
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def test_no_import_runs_up_the_layers():
    assert not upward(graph())


def test_no_import_circle():
    assert not cycles(graph())


def test_the_checks_see_an_upward_arrow_and_a_circle():
    assert upward({"megarecipe.config.x": {"megarecipe.distill.teacher"}}) == [
        "megarecipe.config.x -> megarecipe.distill.teacher"
    ]
    assert upward({"megarecipe.newthing": {"json"}}) == []
    assert upward({"megarecipe.data.x": {"megarecipe.unplaced"}})  # a module outside every layer is named
    edges = {
        "megarecipe.a.x": {"megarecipe.b.y"},
        "megarecipe.b.y": {"megarecipe.c"},
        "megarecipe.c": {"megarecipe.a.x"},
    }
    assert cycles(edges) == [["megarecipe.a.x", "megarecipe.b.y", "megarecipe.c"]]
    assert cycles({"megarecipe.a.x": {"megarecipe.a"}, "megarecipe.a": {"megarecipe.a.x"}}) == []


def test_upper_layers_never_import_the_training_stack():
    edges = graph()
    assert any(m.startswith("megarecipe.analysis.") for m in edges)
    assert not violations(edges)


def test_the_planner_uses_only_deepspeeds_estimators():
    """The ZeRO planner runs on a laptop: DeepSpeed's memory estimators, but no model, engine or trainer."""
    edges = graph()
    for module in [m for m in edges if under(m, ("megarecipe.plan",))]:
        bad = [n for n in reachable(module, edges) if under(n, (*TRAINING_STACK[:-1], "deepspeed.runtime.engine"))]
        assert not bad, f"{module} imports {bad}"


def test_training_stack_never_imports_upper_layers_or_tools():
    edges = graph()
    for module in [m for m in edges if under(m, TRAINING_STACK)]:
        if module.endswith(".__main__"):  # an entry point: `python -m megarecipe.train` runs the tool
            continue
        bad = [n for n in reachable(module, edges) if under(n, (*UPPER, "megarecipe.cli"))]
        assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize(
    "source,module,is_package",
    [
        ("import deepspeed", "megarecipe.analysis.x", False),
        ("def f():\n    from megarecipe.train.loop import train", "megarecipe.analysis.x", False),
        ("import megarecipe.train.step as s", "megarecipe.analysis.x", False),
        ("from megarecipe import train", "megarecipe.analysis.x", False),
        ("from megarecipe.parallel import distributed", "megarecipe.analysis.x", False),
        ("from .. import train", "megarecipe.analysis.x", False),
        ("from ..parallel.engine import build_engine", "megarecipe.analysis.x", False),
        ("from ...train import train", "megarecipe.analysis.sub.x", False),
        ("from ..train import train", "megarecipe.analysis", True),
        ("import megarecipe.util.y", "megarecipe.analysis.x", False),  # util/__init__ re-exports the stack
        ("import json", "megarecipe.analysis.bad.x", False),  # its own package's __init__ does
    ],
)
def test_the_check_sees_a_violation(source, module, is_package):
    edges = {
        module: imports_of(source, module, is_package),
        "megarecipe.util": {"megarecipe.parallel.engine"},
        "megarecipe.util.y": set(),
        "megarecipe.analysis.bad": {"megarecipe.train.step"},
        "megarecipe.analysis": set(),
        "megarecipe": set(),
    }
    assert violations(edges), edges[module]


def test_the_check_passes_harmless_imports():
    source = "import json\nfrom . import runs\nfrom ..rundir import RunDir\nimport megarecipe.data.meta as m"
    edges = {"megarecipe.analysis.x": imports_of(source, "megarecipe.analysis.x", False)}
    assert edges["megarecipe.analysis.x"] >= {"megarecipe.analysis.runs", "megarecipe.rundir", "megarecipe.data"}
    assert not violations(edges)


# A function-level import of the standard library, each with the reason it stays there (a measured cost or a
# circle). Empty: every stdlib module is imported at the top of the module that uses it; the lazy boundary
# (megarecipe/__init__.py) is the heavy third-party stack and the project modules that load it.
STDLIB_IMPORTED_IN_A_FUNCTION: dict[str, str] = {}


def function_level_stdlib_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of each stdlib import statement inside a function body."""
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.Import):
                    names = [alias.name for alias in child.names]
                else:
                    names = [] if child.level else [child.module or ""]
                found.extend((child.lineno, n) for n in names if n.split(".")[0] in sys.stdlib_module_names)
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def test_the_standard_library_is_imported_at_the_top():
    hidden = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: import {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, name in function_level_stdlib_imports(path.read_text())
        if f"{path.relative_to(PACKAGE.parent)}:{name}" not in STDLIB_IMPORTED_IN_A_FUNCTION
    ]
    assert not hidden, "stdlib imported inside a function (hoist it, or list it with a reason):\n" + "\n".join(hidden)


def test_the_stdlib_check_sees_an_import_in_a_function():
    source = "import os\n\ndef f():\n    import json\n    from re import compile\n    import torch\n    return 1\n"
    assert function_level_stdlib_imports(source) == [(4, "json"), (5, "re")]


def test_no_tool_imports_torch_before_it_runs():
    """The boundary above, as a user meets it: importing every tool (what `--help` and a bad-input error cost)
    loads no torch, DeepSpeed or megatron-core."""
    tools = sorted(f"megarecipe.cli.{p.stem}" for p in (PACKAGE / "cli").glob("*.py") if p.stem != "__init__")
    code = f"import sys; import {', '.join(tools)}; " + (
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'deepspeed', 'megatron'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"
