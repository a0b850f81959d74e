"""pyproject.toml: `pip install -e .` makes the packages importable without sys.path edits; runtime and test
requirements are separate lists and cover what the code imports."""
import ast
import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover - Python 3.10
    tomllib = None

SKIPPED_FOLDERS = {'tests', 'save', 'data', 'build', '__pycache__'}


def source_files(*, tests=False):
    """The checkout's .py files (the tests' alone with tests=True), not walking into a venv, save/ or data/."""
    found = []
    for root, folders, files in os.walk(REPO):
        folders[:] = [f for f in folders if not f.startswith('.') and (f not in SKIPPED_FOLDERS or (
            tests and f == 'tests' and root == REPO))]
        in_tests = os.path.relpath(root, REPO).split(os.sep)[0] == 'tests'
        if in_tests == tests:
            found += [os.path.join(root, f) for f in files if f.endswith('.py')]
    return found


def read_requirements(name):
    with open(os.path.join(REPO, name)) as f:
        return {line.split('>=')[0].split('<')[0].split('=')[0].strip().lower()
                for line in f if line.strip() and not line.startswith('#')}


def third_party_imports(paths):
    """Top-level module names imported by these files, minus the standard library and kdzoo's own."""
    # kdzoo's packages and modules, and those the scripts in bench/ and tests/ import from their own folders
    own = {os.path.basename(os.path.dirname(p)) for p in source_files() if p.endswith('__init__.py')}
    own |= {os.path.splitext(os.path.basename(p))[0] for p in source_files() + source_files(tests=True)}
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split('.')[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split('.')[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in own and n != 'conftest'}


# import name -> distribution name, where they differ
DISTRIBUTIONS = {'PIL': 'pillow', 'sklearn': 'scikit-learn', 'nvidia': 'nvidia-dali-cuda120'}


def test_runtime_and_test_requirements_are_separate_and_complete():
    runtime, test = read_requirements('requirements.txt'), read_requirements('requirements-test.txt')
    assert 'pytest' in test and 'pytest' not in runtime and not runtime & test
    needed = {DISTRIBUTIONS.get(n, n) for n in third_party_imports(source_files())}
    needed.discard('nvidia-dali-cuda120')  # the optional DALI extra (requirements-dali.txt)
    assert 'tensorboard' in runtime  # torch.utils.tensorboard's backend, imported through torch
    assert needed <= runtime, needed - runtime
    needed_by_tests = {DISTRIBUTIONS.get(n, n) for n in third_party_imports(source_files(tests=True))}
    needed_by_tests -= {'nvidia-dali-cuda120'}
    assert needed_by_tests <= runtime | test, needed_by_tests - runtime - test


@pytest.mark.skipif(tomllib is None, reason='tomllib is Python 3.11+')
def test_pyproject_reads_those_lists_and_finds_every_package():
    from setuptools import find_packages
    config = tomllib.load(open(os.path.join(REPO, 'pyproject.toml'), 'rb'))
    dynamic = config['tool']['setuptools']['dynamic']
    assert dynamic['dependencies'] == {'file': ['requirements.txt']}
    assert dynamic['optional-dependencies']['test'] == {'file': ['requirements-test.txt']}
    assert dynamic['optional-dependencies']['dali'] == {'file': ['requirements-dali.txt']}
    find = config['tool']['setuptools']['packages']['find']
    found = set(find_packages(REPO, exclude=find['exclude']))
    on_disk = {os.path.relpath(os.path.dirname(p), REPO).replace(os.sep, '.')
               for p in source_files() if os.path.basename(p) == '__init__.py'}
    assert found == on_disk and {'models', 'models.imagenet', 'distiller_zoo', 'crd', 'dataset', 'helper'} <= found


def test_editable_install_imports_without_sys_path_edits(tmp_path):
    """`pip install -e .` (here into a prefix, without build isolation: no network), then the classes import
    in a fresh interpreter started elsewhere whose path holds only the install's site folder."""
    pytest.importorskip('setuptools', minversion='70.1')
    prefix = tmp_path / 'prefix'
    install = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                              '--no-index', '--prefix', str(prefix), '-e', REPO],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    (site,) = glob.glob(str(prefix / 'lib' / 'python*' / 'site-packages'))
    probe = ("import site, sys; site.addsitedir(sys.argv[1]); "
             "from distiller_zoo import DistillKL, DISTILLERS, Distiller; from crd.criterion import CRDLoss; "
             "from models import model_dict, imagenet_model_dict; from models.util import ConvReg, Connector; "
             "import train_student, models; print(models.__file__, len(DISTILLERS))")
    # -I: no PYTHONPATH, no current or script folder on the path; only the install can provide kdzoo
    result = subprocess.run([sys.executable, '-I', '-c', probe, site], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    location, count = result.stdout.split()
    assert location == os.path.join(REPO, 'models', '__init__.py') and int(count) > 30
    # and without the install the same interpreter cannot find them
    bare = subprocess.run([sys.executable, '-I', '-c', 'import distiller_zoo'], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert bare.returncode != 0 and 'ModuleNotFoundError' in bare.stderr


def test_quickstart_installs_runtime_test_requirements_and_the_package():
    text = open(os.path.join(REPO, 'scripts', 'quickstart.sh')).read()
    assert '-r requirements.txt -r requirements-test.txt' in text
    assert '-e .' in text
