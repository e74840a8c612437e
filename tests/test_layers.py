"""The import graph of the product packages (``live/``, ``model/``, ``quant/``), read with
`ast` (nothing is imported), keeps the layers of docs/architecture.md:

* no import circles, counting every import (at the top, inside a function, under
  ``TYPE_CHECKING``: each is a dependency a reader must follow);
* every module imports only from its own layer and the layers `MAY_IMPORT` names for it
  (the folders show the layers: ``live/contract/`` at the bottom, ``live/page/`` and
  ``live/study/`` at the top), except in entry points (a module with
  ``if __name__ == "__main__":`` or a ``__main__.py``): a command line is a composition
  root and may reach up.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("live", "model", "quant")
# Module-name prefixes of each layer, the longest prefix wins (docs/architecture.md).
LAYERS = {
    "live.contract": "contract",  # media rules, CLI convention, writing files, the Result
    "live": "front end",  # capture, buffers, faces, VAD, windows, engine, study logs
    "model": "model",  # network, prompts and answers, checkpoints, the analyser
    "model.data": "data",  # datasets and curation: decoded and tracked by the front end's rules
    "model.train": "data",  # training and evaluation read datasets
    "model.evaluate": "data",
    "quant": "quant",  # plans, loading with one, estimates, the harness (its windows come from the engine)
    "live.page": "top",  # the page's helpers
    "live.study": "top",  # the study workflow
}
MAY_IMPORT = {
    "contract": {"contract"},
    "front end": {"contract", "front end"},
    "model": {"contract", "model"},
    "data": {"contract", "front end", "model", "data"},
    "quant": {"contract", "front end", "model", "quant"},
    "top": {"contract", "front end", "model", "data", "quant", "top"},
}


def layer(module: str) -> str:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The product modules `name` imports (a ``from pkg import sub`` counts as ``pkg.sub``);
    its own parent packages are left out (Python imports those first anyway)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    raw: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            raw.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            subs = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known]
            raw.update(subs or [source])
    out = set()
    for target in raw:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(comp)
    return found


def is_entry(path: Path) -> bool:
    return path.name == "__main__.py" or 'if __name__ == "__main__":' in path.read_text()


def test_no_import_circles():
    found = [sorted(c) for c in circles(graph())]
    assert not found, f"import circles (move the shared piece down, as quant/dtypes.py did): {found}"


def test_every_import_goes_to_an_allowed_layer_outside_entry_points():
    known = modules()
    bad = [f"{name} ({layer(name)}) imports {target} ({layer(target)})"
           for name, targets in graph().items() for target in sorted(targets)
           if layer(target) not in MAY_IMPORT[layer(name)] and not is_entry(known[name])]
    assert not bad, "a module imports a layer it may not:\n" + "\n".join(bad)


def test_the_contract_imports_nothing_else_of_the_project():
    edges = graph()
    assert all(layer(t) == "contract" for m in edges if layer(m) == "contract" for t in edges[m])
    assert layer("live.contract.media") == "contract" and layer("live.page.session") == "top"
    assert layer("model.data.preprocess") == "data" and layer("live.engine") == "front end"


def test_the_graph_sees_circles_and_every_kind_of_import():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    edges = graph()
    assert "live.sources" in edges["live.devices"]  # from .sources import ...
    assert "model.train.settings" in edges["model.train.trainer"]  # under TYPE_CHECKING
    assert "live.lsl" in edges["live.page.tab_study"]  # inside a function
    assert "quant.methods" in edges["quant.plans"]  # from . import methods
    assert "quant.dtypes" in edges["quant.methods.hqq"]  # from ..dtypes import ... (relative, lazy)
