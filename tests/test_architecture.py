"""The layout rules of the package (DESIGN.md), checked so that they stay true.

* no module over 400 lines;
* no private (underscore) name imported from a non-underscore module: shared internals live in
  underscore modules made to be shared;
* the library never imports the command-line app (``torchpalette.cli``), and the app uses only
  the public API (``torchpalette``, ``torchpalette.io``, ``torchpalette.nn``) and its own modules;
* the public API keeps its names and signatures.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import torchpalette as tp

PACKAGE = Path(tp.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
APP = PACKAGE / "cli"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every ``from X import a, b`` of a module as (absolute X, [a, b], line)."""
    here = _module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]  # the package the module sits in
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_at_most_400_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= 400, f"{path.name} has {n} lines (aim: one sitting, <= 400)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_from_a_public_module(path):
    for module, names, line in _imports(path):
        if not module.startswith("torchpalette") or module.split(".")[-1].startswith("_"):
            continue
        folder = PACKAGE.parent.joinpath(*module.split("."))
        private = [n for n in names if n.startswith("_") and not n.startswith("__")
                   and not (folder / f"{n}.py").exists()]  # an underscore module: shared
        assert not private, f"{path.name}:{line} imports {private} from {module}"


# ``python -m torchpalette`` (``__main__.py``) is the app's entry point, not library code.
@pytest.mark.parametrize("path", [p for p in MODULES
                                  if APP not in p.parents and p.name != "__main__.py"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_never_imports_the_app(path):
    for module, names, line in _imports(path):
        assert not module.startswith("torchpalette.cli"), f"{path.name}:{line}: {module}"
        if module == "torchpalette":
            assert "cli" not in names, f"{path.name}:{line} imports torchpalette.cli"


@pytest.mark.parametrize("path", sorted(APP.rglob("*.py")), ids=lambda p: p.name)
def test_app_uses_only_the_public_api(path):
    allowed_modules = {"torchpalette", "torchpalette.io", "torchpalette.nn"}
    for module, names, line in _imports(path):
        if not module.startswith("torchpalette") or module.startswith("torchpalette.cli"):
            continue
        assert module in allowed_modules, f"{path.name}:{line} imports {module}"
        if module == "torchpalette":
            extra = set(names) - set(tp.__all__) - {"io", "nn", "__version__"}
            assert not extra, f"{path.name}:{line} imports non-public {sorted(extra)}"


# Parameters (name, default) of the public API as it was before the package was reorganised;
# new keyword-only parameters may follow, but these keep their order and defaults.
_EMPTY = inspect.Parameter.empty
PUBLIC_SIGNATURES = {
    "srgb_to_lab": [("colors", _EMPTY)],
    "lab_to_srgb": [("lab", _EMPTY), ("clip", True)],
    "srgb_to_oklab": [("colors", _EMPTY)],
    "oklab_to_srgb": [("oklab", _EMPTY), ("clip", True)],
    "parse_colors": [("colors", _EMPTY)],
    "to_hex": [("colors", _EMPTY)],
    "delta_e": [("a", _EMPTY), ("b", _EMPTY), ("method", "ciede2000"), ("space", "srgb"),
                ("kL", None), ("kC", 1), ("kH", 1)],
    "adjacent_delta_e": [("colors", _EMPTY), ("method", "ciede2000"), ("space", "srgb")],
    "kmeans": [("points", _EMPTY), ("k", _EMPTY), ("weights", None), ("init", "k-means++"),
               ("max_iter", 100), ("tol", 1e-4), ("n_init", 1), ("generator", None)],
    "palette": [("image", _EMPTY), ("k", 16), ("space", "lab"), ("max_pixels", None),
                ("seed", 0), ("method", "hist"), ("bits", None)],
    "dominant_colors": [("image", _EMPTY), ("top_n", 32), ("bins", 16)],
    "histogram": [("image", _EMPTY), ("bins", 256)],
    "sort_colors": [("colors", _EMPTY), ("repetitions", 8)],
    "apply_palette": [("image", _EMPTY), ("palette", _EMPTY), ("space", "lab"),
                      ("dither", "none")],
    "reduce_colors": [("image", _EMPTY), ("colors", 16), ("space", "lab"), ("dither", "none"),
                      ("assign", "auto")],
    "read_image": [("path", _EMPTY)],
    "write_image": [("image", _EMPTY), ("path", _EMPTY), ("palette", None)],
}


@pytest.mark.parametrize("name", sorted(PUBLIC_SIGNATURES))
def test_public_signatures_unchanged(name):
    assert name in tp.__all__
    params = list(inspect.signature(getattr(tp, name)).parameters.values())
    named = [(p.name, p.default) for p in params if p.kind != p.VAR_KEYWORD]
    assert named[: len(PUBLIC_SIGNATURES[name])] == PUBLIC_SIGNATURES[name]


def test_public_names_unchanged():
    before = {"JND", "KMeansResult", "Palette", "adjacent_delta_e", "apply_palette", "delta_e",
              "dominant_colors", "histogram", "kmeans", "lab_to_srgb", "nn", "oklab_to_srgb",
              "palette", "parse_colors", "read_image", "reduce_colors", "sort_colors",
              "srgb_to_lab", "srgb_to_oklab", "to_hex", "write_image"}
    assert before <= set(tp.__all__)
    assert {"ColorQuantizer", "PaletteQuantizer", "RandomColorReduction"} <= set(tp.nn.__all__)
    for name in tp.__all__:
        assert getattr(tp, name) is not None


def test_app_has_no_import_cycles():
    """Every import between app modules, at any depth of a file (function-level and
    TYPE_CHECKING imports too), forms no cycle: each module can be read before its users."""
    graph = {}
    for path in sorted(APP.rglob("*.py")):
        me = _module_name(path)
        deps = set()
        for m, names, _ in _imports(path):  # ``from . import x`` names the module x
            deps |= {f"{m}.{n}" for n in names} if m == "torchpalette.cli" else {m}
        graph[me] = {m for m in deps if m.startswith("torchpalette.cli.") and m != me}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "import cycle: " + " -> ".join([*trail, node])
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])
    assert "torchpalette.cli.folder" not in graph  # it only re-exported: removed
