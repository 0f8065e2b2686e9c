"""ARCHITECTURE.md's import rules, checked on the code (every import, also those inside functions).

If this fails, either the change crossed a layer (move the code to where it belongs) or the
architecture changed on purpose (change ARCHITECTURE.md and the table below together).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "cman"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors", ("cman.errors",)),
    ("system plumbing", ("cman._sys",)),
    ("models", ("cman.models", "cman.validate")),
    ("cgroups", ("cman.cgroups",)),
    ("policy", ("cman.network", "cman.jobs", "cman.images", "cman.bootstrap", "cman.oci", "cman.config",
                "cman.profiles")),
    ("contract", ("cman.backends.base", "cman.backends")),
    ("engines", ("cman.backends.docker", "cman.backends.lxd", "cman.backends.lxc")),
    ("verbs", ("cman.lifecycle", "cman.stats", "cman.dockerd", "cman.leftovers", "cman.imagesync", "cman.search",
                "cman.pve", "cman.dockerhost")),
    ("services", ("cman.monitor",)),
    ("library api", ("cman",)),
    ("cli", ("cman.cli", "cman.__main__")),
]
"""Bottom to top, as in ARCHITECTURE.md. A module may import its own layer and the ones below."""

ENGINES = ("cman.backends.docker", "cman.backends.lxd", "cman.backends.lxc")
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _owner(module: str, table: tuple[str, ...]) -> str | None:
    """The longest prefix in ``table`` that ``module`` falls under."""
    hits = [p for p in table if module == p or module.startswith(p + ".")]
    return max(hits, key=len) if hits else None


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        owner = _owner(module, prefixes)
        if owner is not None and (best is None or len(owner) > best[0]):
            best = (len(owner), index)
    assert best is not None, f"{module} is in no layer of ARCHITECTURE.md"
    return best[1]


def imports_of(module: str, path: Path) -> set[str]:
    """Every cman module that ``module`` imports, resolved to the longest existing module name."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from X import Y``: the module X.Y when Y is one, else a name of module X
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            if name == "cman" or name.startswith("cman."):
                while name not in MODULES and "." in name:
                    name = name.rpartition(".")[0]
                if name in MODULES and name != module:
                    found.add(name)
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str) -> None:
    mine = layer_of(module)
    for target in sorted(imports_of(module, MODULES[module])):
        theirs = layer_of(target)
        assert theirs <= mine, (
            f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]}), a layer above it"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_engine_packages_are_private_to_themselves(module: str) -> None:
    """Only an engine's own package imports it; everyone else goes through the registry and the contract."""
    own = _owner(module, ENGINES)
    for target in imports_of(module, MODULES[module]):
        engine = _owner(target, ENGINES)
        assert engine is None or engine == own, f"{module} imports {target}: go through cman.backends.load()"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it by concern (ARCHITECTURE.md)"


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from .network import isolation\n    import cman.cli\n    from .backends import base\n")
    assert imports_of("cman.stats", source) == {"cman.network.isolation", "cman.cli", "cman.backends.base"}
    assert layer_of("cman.cli") > layer_of("cman.stats") > layer_of("cman.backends.lxd") > layer_of("cman.network")
