"""The layers follow the data: analysis (reads run dirs), launch (starts runs) and recipes (create runs) never
import the training stack, and the training stack never imports them. Checked over the static import graph,
imports inside functions included."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "megarecipe"
TRAINING_STACK = ("megarecipe.train", "megarecipe.step", "megarecipe.parallel", "megatron", "deepspeed")
UPPER = ("megarecipe.analysis", "megarecipe.launch", "megarecipe.recipes")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


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


def test_upper_layers_never_import_the_training_stack():
    edges = graph()
    upper = [m for m in edges if under(m, UPPER)]
    assert any(m.startswith("megarecipe.analysis.") for m in upper)
    for module in upper:
        bad = {name: via for name, via in reachable(module, edges).items() if under(name, TRAINING_STACK)}
        assert not bad, f"{module} reaches the training stack: " + ", ".join(f"{n} (via {v})" for n, v in bad.items())


def test_the_planner_uses_only_deepspeeds_estimators():
    """The ZeRO planner runs on a laptop: DeepSpeed's memory estimators, but no model, engine or trainer."""
    edges = graph()
    for module in [m for m in edges if under(m, ("megarecipe.plan",))]:
        bad = [n for n in reachable(module, edges) if under(n, (*TRAINING_STACK[:-1], "deepspeed.runtime.engine"))]
        assert not bad, f"{module} imports {bad}"


def test_training_stack_never_imports_upper_layers_or_tools():
    edges = graph()
    for module in [m for m in edges if under(m, TRAINING_STACK)]:
        bad = [n for n in reachable(module, edges) if under(n, (*UPPER, "megarecipe.cli"))]
        assert not bad, f"{module} imports {bad}"


def test_the_check_sees_a_violation():
    edges = {"megarecipe.analysis.x": {"megarecipe.util"}, "megarecipe.util": {"deepspeed"}}
    assert "deepspeed" in reachable("megarecipe.analysis.x", edges)
