"""The house rules that keep the tree readable: imports run down the floors (ARCHITECTURE.md), and a
method's module never reaches into the engine."""
import ast
import os

from conftest import REPO

# Higher numbers sit higher; a package may import its own floor or any lower one.
FLOORS = {'helper': 0, 'models': 1, 'dataset': 1, 'distiller_zoo': 1, 'crd': 1, 'online': 1, 'engine': 2}


def imported_packages(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split('.')[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split('.')[0], node.lineno


def test_no_import_runs_up_a_floor():
    upward = []
    for package, floor in FLOORS.items():
        for folder, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if not name.endswith('.py'):
                    continue
                path = os.path.join(folder, name)
                for target, line in imported_packages(path):
                    if FLOORS.get(target, -1) > floor:
                        upward.append(f"{os.path.relpath(path, REPO)}:{line} imports {target}")
    assert not upward, upward


def test_the_floor_checker_sees_an_upward_import(tmp_path):
    path = tmp_path / 'x.py'
    path.write_text('import os\nfrom engine.loop import Trainer\nfrom .base import register\n')
    assert list(imported_packages(str(path))) == [('os', 1), ('engine', 2)]
