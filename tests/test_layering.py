"""Import boundaries, read from the source (AST), counting every way a module can load another.

- ``sim`` (the core) imports no UI, HTTP or disk library and none of the project's outer layers:
  not ``streamlit``, ``requests``, ``diskcache``, ``urllib3``, ``plotly``, ``data_cache``,
  ``dashboard`` or ``covered_call_lab``. One declared exemption: ``sim/__main__.py``, the entry
  point of ``python -m sim``, imports the command line ``covered_call_lab.cli``.
- ``data_cache`` never imports ``dashboard`` (nor the command line on top, ``covered_call_lab``).
- No module loads a module of the project by a string: an import is what a reader and this test
  can see. ``importlib.import_module(...)``, ``import_module(...)`` and ``__import__(...)`` count
  as imports of their string argument, anywhere in sim, data_cache, dashboard and covered_call_lab;
  a call whose argument is not a string constant is refused everywhere but the user-plugin loader
  ``sim.policies.load_policy`` (``--policy package.module:function`` stays dynamic).

The checker is tested on planted violations, one per form, in a temporary copy of the packages.
"""

from __future__ import annotations

import ast
import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "data_cache", "dashboard", "covered_call_lab")

FORBIDDEN: dict[str, frozenset[str]] = {
    "sim": frozenset({"streamlit", "requests", "diskcache", "urllib3", "plotly", "data_cache", "dashboard",
                      "covered_call_lab"}),
    "data_cache": frozenset({"dashboard", "covered_call_lab"}),
}
# (module file, imported module): the one declared way out of the core.
EXEMPT: frozenset[tuple[str, str]] = frozenset({("sim/__main__.py", "covered_call_lab.cli")})
# (module file, function) allowed to call import_module with a value that is not a constant.
DYNAMIC_LOADERS: frozenset[tuple[str, str]] = frozenset({("sim/policies.py", "load_policy")})
_LOADERS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Import:
    file: str          # path relative to the root, e.g. "sim/cli_args.py"
    line: int
    module: str | None  # the absolute module name; None for a loader called with a non-constant
    how: str           # "import", "from", "import_module", "__import__"
    function: str      # the enclosing function ("" at module level)


def _package_of(rel: str) -> list[str]:
    parts = rel[:-3].split("/")
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def _loader_name(func: ast.expr) -> str | None:
    """``import_module`` / ``__import__`` for ``importlib.import_module(...)``, ``import_module(...)``,
    ``__import__(...)``, ``importlib.__import__(...)`` and ``builtins.__import__(...)``."""
    if isinstance(func, ast.Name) and func.id in _LOADERS:
        return func.id
    if isinstance(func, ast.Attribute) and func.attr in _LOADERS:
        return func.attr
    return None


def imports_in(path: Path, root: Path) -> list[Import]:
    """Every import in the file at ``path``: statements (relative ones made absolute) and loader calls."""
    return list(_imports_of_text(path.relative_to(root).as_posix(), path.read_text(encoding="utf-8")))


@functools.lru_cache(maxsize=1024)
def _imports_of_text(rel: str, text: str) -> tuple[Import, ...]:
    tree = ast.parse(text, filename=rel)
    found: list[Import] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Import):
                found.extend(Import(rel, child.lineno, a.name, "import", function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = _package_of(rel)[: len(_package_of(rel)) - (child.level - 1)]
                    module = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    module = child.module or ""
                found.append(Import(rel, child.lineno, module, "from", function))
                if child.module is None:  # from . import x: x may be a module
                    found.extend(Import(rel, child.lineno, f"{module}.{a.name}", "from", function)
                                 for a in child.names)
            elif isinstance(child, ast.Call) and (how := _loader_name(child.func)):
                arg = child.args[0] if child.args else next((k.value for k in child.keywords if k.arg == "name"), None)
                constant = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                found.append(Import(rel, child.lineno, arg.value if constant else None, how, function))
            visit(child, inner)

    visit(tree, "")
    return tuple(found)


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root`` (a folder holding the packages), one sentence each."""
    out: list[str] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for imp in imports_in(path, root):
                where = f"{imp.file}:{imp.line}"
                if imp.module is None:
                    if (imp.file, imp.function) not in DYNAMIC_LOADERS:
                        out.append(f"{where} calls {imp.how} with a computed name (only the --policy plugin "
                                   "loader may)")
                    continue
                top = imp.module.split(".")[0]
                if imp.how in _LOADERS and top in PACKAGES:
                    out.append(f"{where} loads {imp.module} by a string ({imp.how}); use an import statement")
                if top in FORBIDDEN.get(package, ()) and (imp.file, imp.module) not in EXEMPT:
                    out.append(f"{where} imports {imp.module} ({package} must not import {top})")
    return out


def test_the_packages_keep_their_import_boundaries():
    assert violations(REPO) == []


def test_the_exemption_is_used_and_is_the_only_way_out_of_sim():
    """sim/__main__.py really is the entry point importing the command line (else drop the exemption)."""
    found = [(i.file, i.module) for i in imports_in(REPO / "sim" / "__main__.py", REPO)]
    assert ("sim/__main__.py", "covered_call_lab.cli") in found
    assert not (REPO / "sim" / "cli.py").exists()        # the command line left the core


def test_the_one_dynamic_loader_is_the_policy_plugin_loader():
    dynamic = [(i.file, i.function) for p in PACKAGES for f in sorted((REPO / p).rglob("*.py"))
               for i in imports_in(f, REPO) if i.module is None]
    assert dynamic == [("sim/policies.py", "load_policy")]


PLANTED = {
    "import": ("sim/planted.py", "import data_cache.sources\n", "imports data_cache.sources"),
    "import-as": ("sim/planted.py", "import requests as r\n", "imports requests"),
    "from": ("sim/planted.py", "from data_cache.demo import DemoMarket\n", "imports data_cache.demo"),
    "from-package": ("sim/planted.py", "from dashboard import page\n", "imports dashboard"),
    "in-a-function": ("sim/planted.py", "def f():\n    import streamlit\n", "imports streamlit"),
    "import_module": ("sim/planted.py", "import importlib\nimportlib.import_module('data_cache.sources')\n",
                      "loads data_cache.sources by a string"),
    "import_module-bare": ("sim/planted.py", "from importlib import import_module\nimport_module('diskcache')\n",
                           "imports diskcache"),
    "import_module-name-kw": ("sim/planted.py", "import importlib\nimportlib.import_module(name='plotly')\n",
                              "imports plotly"),
    "__import__": ("sim/planted.py", "__import__('urllib3')\n", "imports urllib3"),
    "builtins.__import__": ("sim/planted.py", "import builtins\nbuiltins.__import__('data_cache')\n",
                            "loads data_cache by a string"),
    "string-outside-sim": ("dashboard/planted.py", "import importlib\nimportlib.import_module('sim.types')\n",
                           "loads sim.types by a string"),
    "computed-name": ("data_cache/planted.py", "import importlib\nNAME = 'data_cache.demo'\n"
                      "importlib.import_module(NAME)\n", "calls import_module with a computed name"),
    "data_cache-to-dashboard": ("data_cache/planted.py", "from dashboard.figures import make_equity_figure\n",
                                "imports dashboard.figures"),
}


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layering")
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(root) == []
    return root


@pytest.mark.parametrize("form", sorted(PLANTED))
def test_the_checker_catches_a_planted_violation(form, clean_copy, tmp_path):
    """Each form, planted in a copy of the packages, is reported, naming the file and line."""
    root = tmp_path / "repo"
    shutil.copytree(clean_copy, root)
    rel, code, expected = PLANTED[form]
    (root / rel).write_text(code)
    found = violations(root)
    assert found and all(v.startswith(f"{rel}:") for v in found), found
    assert any(expected in v for v in found), found


def test_relative_imports_are_read_as_absolute(tmp_path):
    (tmp_path / "data_cache" / "sub").mkdir(parents=True)
    path = tmp_path / "data_cache" / "sub" / "m.py"
    path.write_text("from .. import demo\nfrom ..cache import open_cache\nfrom . import x\n")
    assert [i.module for i in imports_in(path, tmp_path)] == [
        "data_cache", "data_cache.demo", "data_cache.cache", "data_cache.sub", "data_cache.sub.x"]


def test_the_exemption_covers_only_its_file(clean_copy, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(clean_copy, root)
    (root / "sim" / "schedule.py").write_text("from covered_call_lab.cli import main\n")
    assert violations(root) == ["sim/schedule.py:1 imports covered_call_lab.cli (sim must not import "
                                "covered_call_lab)"]
