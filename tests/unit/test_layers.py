"""The layers of sdcadm, enforced: an import never runs up a layer and never
closes a cycle between the parts (docs/internals.md, "Layers").

Top to bottom: cli, lab -> procedures -> agent -> restore_data, usbkey ->
datasets -> transport -> store and the base modules (model, errors, config,
catalog, schemas, images, progress, ...). Imports inside functions count too:
a lazy import dodges an import-time cycle, not a design one.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sdcadm"

# Rank of each subpackage; a part may import only parts of a lower or equal
# rank (equal: peers, as long as no cycle forms). Everything not named here
# (top-level modules, catalog, schemas, store) is the base layer, rank 0.
RANKS = {
    "cli": 6, "lab": 6,
    "procedures": 5,
    "agent": 4,
    "restore_data": 3, "usbkey": 3,
    "datasets": 2,
    "transport": 1,
}


def part_of(module):
    """``sdcadm.agent.plan`` -> ``agent``; ``sdcadm.config`` -> ``config``;
    ``sdcadm`` (the package root, for ``__version__``) -> None."""
    names = module.split(".")
    return names[1] if len(names) > 1 else None


def rank(part):
    return RANKS.get(part, 0)


def module_name(path, root):
    rel = path.relative_to(root.parent).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def imports_of(path, root):
    """(lineno, imported module) for every sdcadm import in ``path``."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from sdcadm import lab`` imports the part ``lab``.
            if target == root.name:
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name.split(".")[0] == root.name]


def edges(root):
    """Every import between two different parts: (from part, to part, where)."""
    result = []
    for path in sorted(root.rglob("*.py")):
        source = part_of(module_name(path, root))
        for line, target in imports_of(path, root):
            dest = part_of(target)
            if source and dest and dest != source:
                result.append((source, dest, f"{path.relative_to(root.parent)}:{line}"))
    return result


def violations(root):
    """Human-readable problems: imports up a layer, and cycles between parts."""
    found = []
    graph = {}
    for source, dest, where in edges(root):
        if rank(dest) > rank(source):
            found.append(f"{where}: {source} (layer {rank(source)}) imports {dest} "
                         f"(layer {rank(dest)}), which is above it")
        graph.setdefault(source, {}).setdefault(dest, where)
    for cycle in cycles(graph):
        hops = " -> ".join(cycle + [cycle[0]])
        sites = ", ".join(graph[a][b] for a, b in zip(cycle, cycle[1:] + cycle[:1]))
        found.append(f"import cycle {hops} (at {sites})")
    return found


def cycles(graph):
    """The strongly connected parts of more than one node, each as one cycle
    through them (Tarjan, then a walk inside the component)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(walk_cycle(graph, set(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def walk_cycle(graph, component):
    start = min(component)
    path, seen, node = [start], {start}, start
    while True:
        node = next(n for n in sorted(graph[node]) if n in component)
        if node in seen:
            return path[path.index(node):]
        path.append(node)
        seen.add(node)


def test_sdcadm_imports_follow_the_layers():
    problems = violations(PACKAGE)
    assert problems == [], "imports that break the layers:\n" + "\n".join(problems)


def test_every_subpackage_has_a_layer():
    parts = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    base = {"store", "catalog", "schemas"}
    assert parts - base <= set(RANKS), f"give these a layer in RANKS: {parts - base - set(RANKS)}"


# The checker itself, on small trees: it must catch what it is there to catch.

def make_tree(tmp_path, files):
    root = tmp_path / "sdcadm"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    return root


def test_checker_names_an_import_up_a_layer(tmp_path):
    root = make_tree(tmp_path, {
        "restore_data/puller.py": "import os\n\ndef f():\n    from sdcadm.agent.provision import make_payload\n",
        "agent/provision.py": "def make_payload():\n    pass\n",
    })
    problems = violations(root)
    assert any(p.startswith("sdcadm/restore_data/puller.py:4: restore_data (layer 3) imports agent")
               for p in problems), problems


def test_checker_names_a_cycle_between_peers(tmp_path):
    root = make_tree(tmp_path, {
        "model.py": "from sdcadm.store.status import S\n",
        "store/status.py": "from sdcadm import model\nclass S: pass\n",
    })
    problems = violations(root)
    assert problems == ["import cycle model -> store -> model "
                        "(at sdcadm/model.py:1, sdcadm/store/status.py:1)"]


def test_checker_follows_relative_imports(tmp_path):
    root = make_tree(tmp_path, {
        "transport/zfs.py": "from ..datasets.plan import Snapshot\n",
        "datasets/plan.py": "from ..transport import zfs\nclass Snapshot: pass\n",
    })
    problems = violations(root)
    assert "sdcadm/transport/zfs.py:1: transport (layer 1) imports datasets (layer 2), which is above it" \
        in problems
    assert any(p.startswith("import cycle datasets -> transport -> datasets") for p in problems)


def test_checker_accepts_imports_down_and_within_a_part(tmp_path):
    root = make_tree(tmp_path, {
        "cli/main.py": "from sdcadm.procedures import run\nfrom sdcadm import errors\nfrom . import output\n",
        "cli/output.py": "from .main import x\n",
        "procedures/run.py": "from sdcadm.store import open_store\n",
        "errors.py": "",
    })
    assert violations(root) == []


@pytest.mark.parametrize("text", ["from sdcadm import lab\n", "import sdcadm.lab.ctl\n"])
def test_checker_sees_every_import_form(tmp_path, text):
    root = make_tree(tmp_path, {"agent/x.py": text, "lab/ctl.py": ""})
    assert violations(root) == [
        "sdcadm/agent/x.py:1: agent (layer 4) imports lab (layer 6), which is above it"]
