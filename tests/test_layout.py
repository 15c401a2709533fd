"""The code's layout: llasa/'s imports form no circle, only llasa/cli.py knows the command line, no library module is a
script, and no script imports another."""

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).parent.parent
SCRIPTS = ("create_dataset", "train", "train_dpo", "inference", "evaluate", "reward_whisper", "listen")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module an import statement of the file names (at the top or inside a function), as absolute names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def library_graph() -> dict[str, set[str]]:
    """Module -> the llasa modules it imports (a package's own __init__ aside)."""
    modules = {module_name(path): path for path in (REPO / "llasa").rglob("*.py")}
    return {name: imported_names(path) & modules.keys() - {name} for name, path in modules.items()}


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def test_library_imports_form_no_circle():
    graph = library_graph()
    assert sum(map(len, graph.values())) > 50  # the graph really holds the imports
    assert circle(graph) is None


def test_the_check_sees_a_circle():
    # The circle these modules once had (scores -> cli -> synthesis -> sampling -> scores) is found.
    graph = library_graph()
    graph["llasa.scores"] |= {"llasa.cli"}
    graph["llasa.cli"] |= {"llasa.synthesis"}
    graph["llasa.sampling"] |= {"llasa.scores"}
    assert {"llasa.scores", "llasa.cli", "llasa.synthesis", "llasa.sampling"} <= set(circle(graph))


def test_only_cli_knows_the_command_line():
    # No library module but llasa/cli.py imports argparse or llasa.cli, and none runs as a script.
    for path in (REPO / "llasa").rglob("*.py"):
        if path.name == "cli.py" and path.parent.name == "llasa":
            continue
        names = imported_names(path)
        assert not names & {"argparse", "llasa.cli"}, path
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body), path


def test_scripts_import_no_other_script():
    for script in SCRIPTS:
        names = imported_names(REPO / f"{script}.py")
        assert not names & set(SCRIPTS), script
