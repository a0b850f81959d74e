"""The house rules that keep the tree readable: imports run down the floors (ARCHITECTURE.md), no module
imports itself back through a circle, and no import hides from these checks: import statements at any
depth (inside functions too) and ``importlib.import_module('x')`` / ``__import__('x')`` calls all count,
and a dynamic import whose target the checker cannot read is refused."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

# Higher numbers sit higher; a package may import its own floor or any lower one.
FLOORS = {'helper': 0, 'models': 1, 'dataset': 1, 'distiller_zoo': 1, 'crd': 1, 'online': 1, 'engine': 2}
DYNAMIC_IMPORTERS = {('importlib', 'import_module'), (None, 'import_module'), (None, '__import__')}
UNREADABLE = '?'  # the target of a dynamic import the checker cannot read


def module_name(path, root=REPO):
    """'helper.errors' for REPO/helper/errors.py, 'distiller_zoo' for REPO/distiller_zoo/__init__.py."""
    parts = os.path.splitext(os.path.relpath(path, root))[0].split(os.sep)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def package_of(path, root=REPO):
    """The package a file's relative imports start from (its own name for an __init__.py)."""
    name = module_name(path, root)
    return name if os.path.basename(path) == '__init__.py' else name.rpartition('.')[0]


def _resolve(level, module, package):
    """The absolute name of ``from <level dots><module> import ...`` in ``package``; None without a package."""
    if level == 0:
        return module
    if package is None:
        return None
    base = package.split('.')
    base = base[:len(base) - (level - 1)]
    return '.'.join(base + ([module] if module else []))


def _dynamic_target(call, package):
    """The module an ``import_module(...)`` or ``__import__(...)`` call names: the string itself, ``<pkg>.*``
    for ``f'{__name__}.…'`` / ``f'{__package__}.…'`` in a package (one of its own modules), else UNREADABLE."""
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        level = len(arg.value) - len(arg.value.lstrip('.'))
        return _resolve(level, arg.value[level:], package) if level else arg.value
    if (isinstance(arg, ast.JoinedStr) and package and arg.values and isinstance(arg.values[0], ast.FormattedValue)
            and isinstance(arg.values[0].value, ast.Name) and arg.values[0].value.id in ('__name__', '__package__')):
        return package + '.*'
    return UNREADABLE


def _called_name(call):
    func = call.func
    if isinstance(func, ast.Name):
        return None, func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id, func.attr
    return None, None


def imported_modules(path, package=None):
    """(dotted name, line) of every import in the file, at any depth: ``import a.b`` gives 'a.b', ``from a
    import b, c`` gives 'a.b' and 'a.c' (b may be a module or a name in a), dynamic imports their target
    (see ``_dynamic_target``). Relative imports are resolved in ``package`` and skipped without it."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.level, node.module, package)
            if base:
                for alias in node.names:
                    yield f'{base}.{alias.name}', node.lineno
        elif isinstance(node, ast.Call) and _called_name(node) in DYNAMIC_IMPORTERS:
            yield _dynamic_target(node, package), node.lineno


def imported_packages(path, package=None):
    """(top-level package, line) of the file's imports, once per package and line."""
    seen = []
    for name, line in imported_modules(path, package):
        if (name.split('.')[0], line) not in seen:
            seen.append((name.split('.')[0], line))
    return seen


def floor_files():
    for package in FLOORS:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            yield from (os.path.join(folder, name) for name in sorted(files) if name.endswith('.py'))


def test_no_import_runs_up_a_floor():
    upward = []
    for path in floor_files():
        floor = FLOORS[module_name(path).split('.')[0]]
        for target, line in imported_packages(path, package_of(path)):
            if FLOORS.get(target, -1) > floor:
                upward.append(f"{os.path.relpath(path, REPO)}:{line} imports {target}")
    assert not upward, upward


def test_every_dynamic_import_names_its_target():
    unreadable = [f"{os.path.relpath(path, REPO)}:{line}" for path in floor_files()
                  for target, line in imported_modules(path, package_of(path)) if target == UNREADABLE]
    assert not unreadable, f"dynamic imports whose module the checker cannot read: {unreadable}"


def import_graph(paths=None, root=REPO):
    """{module: {modules it imports}} over kdzoo's own modules, each import taken to the longest module name
    it starts with (``from helper import signals`` -> helper.signals; ``from helper.errors import
    KDZooError`` -> helper.errors); ``<pkg>.*`` stands for every module in the package."""
    paths = list(floor_files()) if paths is None else paths
    modules = {module_name(p, root): p for p in paths}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for target, _ in imported_modules(path, package_of(path, root)):
            if target.endswith('.*'):
                edges |= {m for m in modules if m.startswith(target[:-1])}
                continue
            parts = target.split('.')
            known = [p for p in ('.'.join(parts[:i]) for i in range(len(parts), 0, -1)) if p in modules]
            if known:
                edges.add(known[0])
        graph[name] = edges - {name}
    return graph


def circles(graph):
    """The import circles of ``graph``: its strongly connected components of more than one module, sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# Imports that close a circle today, each with its reason and who removes it; the checker fails on any other
# circle, and on an entry here that no longer exists (delete it then).
KNOWN_CIRCLE_EDGES = set()  # none today


def test_no_import_circles():
    graph = import_graph()
    for source, target in KNOWN_CIRCLE_EDGES:
        path = os.path.join(REPO, *source.split('.')) + '.py'
        written = {name for name, _ in imported_modules(path, package_of(path))}
        assert target in written or target in graph[source], f"{source} -> {target} is gone: delete its entry"
        graph[source] -= ({m for m in graph if m.startswith(target[:-1])} if target.endswith('.*') else {target})
    assert not circles(graph), circles(graph)


def test_the_floor_checker_sees_an_upward_import(tmp_path):
    path = tmp_path / 'x.py'
    path.write_text('import os\nfrom engine.loop import Trainer\nfrom .base import register\n')
    assert list(imported_packages(str(path))) == [('os', 1), ('engine', 2)]


def test_the_checkers_see_imports_in_functions_and_through_importlib(tmp_path):
    path = tmp_path / 'x.py'
    path.write_text("import importlib\nfrom importlib import import_module\n\n\ndef late():\n"
                    "    from engine import loop\n    importlib.import_module('engine.pack')\n"
                    "    import_module('.sibling', __package__)\n    __import__('online')\n"
                    "    importlib.import_module(name)\n")
    assert list(imported_modules(str(path), 'distiller_zoo')) == [
        ('importlib', 1), ('importlib.import_module', 2), ('engine.loop', 6), ('engine.pack', 7),
        ('distiller_zoo.sibling', 8), ('online', 9), (UNREADABLE, 10)]


def test_the_circle_checker_sees_a_circle_made_by_a_late_or_dynamic_import(tmp_path):
    package = tmp_path / 'helper'
    package.mkdir()
    files = {'__init__.py': '', 'a.py': 'from helper.b import thing\n',
             'b.py': "def late():\n    import importlib\n    return importlib.import_module('helper.c')\n",
             'c.py': 'def later():\n    from . import a\n'}
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph([str(package / name) for name in files], root=str(tmp_path))
    assert circles(graph) == [['helper.a', 'helper.b', 'helper.c']]
    del graph['helper.c']
    assert circles(graph) == []


@pytest.mark.slow
@pytest.mark.parametrize('package', sorted(p for p in FLOORS if p != 'engine'))
def test_importing_a_floor_loads_nothing_above_it(package):
    """What the static checks cannot read (an attribute hook, a registry filled on import) still shows at run
    time: every module of a package imported in a fresh interpreter leaves no higher floor in sys.modules."""
    probe = ("import importlib, pkgutil, sys\n"
             f"pkg = importlib.import_module({package!r})\n"
             "for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
             "    importlib.import_module(info.name)\n"
             "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))\n")
    result = subprocess.run([sys.executable, '-c', probe], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    above = {name for name in loaded if FLOORS.get(name, -1) > FLOORS[package]}
    assert not above, f"importing {package} loads {sorted(above)}"
