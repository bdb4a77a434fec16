"""The package's imports point down its layers, with no circle (``make lint`` runs this).

    python scripts/check_layers.py [plugin]

Every ``import`` of a module of the package, at the top of a file or inside a function (a lazy
import is still an arrow), is read from the source with ``ast``. Two rules:

* **down only**: a module may import its own layer or a lower one (:data:`LAYERS`, lowest
  first); an import of a higher layer is reported;
* **no circle**: the modules' imports form no cycle, inside a layer as well.

A module not named in :data:`LAYERS` is reported too, so a new file has to be given its place.
Exit status 1 when anything is reported, with one line per problem.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "fiftyone_anonymizer"

#: The layers, lowest first: a module's dotted name (relative to the package) or the name of
#: a sub-package, which holds every module under it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core: boxes, images, video files, weights, TensorFlow loading", ("core",)),
    ("the blur and the detectors", ("blur", "detectors")),
    ("the processing core, metrics, the video path", ("engine", "metrics", "videos")),
    ("jobs: the FiftyOne layer", ("jobs", "folders")),
    ("front ends", ("app", "models", "demo", "cli")),
    ("the package's door", ("__init__",)),
]


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (dotted, relative to the package)."""
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or module.startswith(member + "."):
                return index
    return None


def module_name(root: Path, path: Path) -> str:
    """``core.images`` for ``root/core/images.py``; ``detectors`` for its ``__init__.py``;
    ``__init__`` for the package's own."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The package-relative module an ``from ... import`` names, None outside the package."""
    if node.level == 0:
        name = node.module or ""
        if name == PACKAGE:
            return ""
        if name.startswith(PACKAGE + "."):
            return name[len(PACKAGE) + 1 :]
        return None
    base = current.split(".") if current and current != "__init__" else []
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(root: Path, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (package-relative names)."""
    current = module_name(root, path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [
                a.name[len(PACKAGE) + 1 :] for a in node.names if a.name.startswith(PACKAGE + ".")
            ]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(current, is_package, node)
            if base is None:
                continue
            # ``from . import engine`` imports the module engine; ``from .engine import run``
            # the module engine
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                targets.append(candidate if candidate in modules else base)
        for target in targets:
            while target and target not in modules:  # a name inside a module
                target = target.rpartition(".")[0]
            if target and target != current:
                found.add(target)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports, for every ``.py`` file under ``root``."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    names = set(files)
    return {name: imports_of(root, path, names) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def problems(root: Path) -> list[str]:
    """One line per upward import, circle, or module without a layer."""
    edges = graph(root)
    out = []
    for module in sorted(edges):
        mine = layer_of(module)
        if mine is None:
            out.append(f"{module}: no layer (add it to LAYERS in scripts/check_layers.py)")
            continue
        for target in sorted(edges[module]):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                out.append(
                    f"{module} imports {target}: up from '{LAYERS[mine][0]}' to "
                    f"'{LAYERS[theirs][0]}'"
                )
    for group in cycles(edges):
        ties = [f"{a} -> {b}" for a in group for b in sorted(edges[a]) if b in group]
        out.append(f"circle of {len(group)} modules: {', '.join(ties)}")
    return out


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0] if args else Path(__file__).resolve().parents[1] / "plugin")
    found = problems(root)
    for line in found:
        print(line)
    edges = graph(root)
    print(
        f"{len(edges)} modules, {sum(len(v) for v in edges.values())} imports: "
        + ("all point down, no circle" if not found else f"{len(found)} problem(s)")
    )
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
