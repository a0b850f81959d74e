"""pyproject.toml: `pip install -e .` makes the packages importable without sys.path edits and claims exactly
the top-level names it lists (no other installed distribution may claim one); tools/ and bench/ run through
it without editing sys.path; runtime and test requirements are separate lists and cover what the code
imports."""
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
    own |= {os.path.relpath(p, REPO).split(os.sep)[0] for p in source_files()}  # bench/, whose modules tests use
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split('.')[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split('.')[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in own and n != 'conftest'}


# The top-level names `pip install .` claims (pyproject.toml), the checkout's packages it leaves out, and the
# training scripts it installs as modules.
INSTALLED = {'models', 'dataset', 'helper', 'distiller_zoo', 'crd', 'engine', 'online'}
NOT_INSTALLED = {'tools'}
SCRIPT_MODULES = {'train_teacher', 'train_student', 'train_online_mcl'}

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
    found = set(find_packages(REPO, include=find['include']))
    on_disk = {os.path.relpath(os.path.dirname(p), REPO).replace(os.sep, '.')
               for p in source_files() if os.path.basename(p) == '__init__.py'}
    # every package of the checkout under the names the install claims, none left behind, and tools/ not
    # installed: a new top-level folder is a decision to write into pyproject.toml (and INSTALLED here)
    assert {name.split('.')[0] for name in found} == INSTALLED
    assert found == {name for name in on_disk if name.split('.')[0] in INSTALLED}
    assert {name.split('.')[0] for name in on_disk} - INSTALLED == NOT_INSTALLED
    assert set(config['tool']['setuptools']['py-modules']) == SCRIPT_MODULES


def test_no_other_installed_distribution_claims_a_kdzoo_name():
    """The editable finder is asked after the import path, so a distribution that installs a package of one of
    these names would take it over outside the checkout; none in this environment may."""
    from importlib.metadata import packages_distributions
    claimed = packages_distributions()
    others = {name: sorted(set(claimed[name]) - {'kdzoo'}) for name in INSTALLED | SCRIPT_MODULES | NOT_INSTALLED
              if set(claimed.get(name, ())) - {'kdzoo'}}
    assert not others, f"installed distributions that take kdzoo's top-level names: {others}"


@pytest.mark.slow
def test_a_tool_runs_as_a_module_from_the_checkout():
    """Without the install (and without PYTHONPATH), `python -m tools.eval` from the checkout finds everything
    through the current folder."""
    result = subprocess.run([sys.executable, '-E', '-s', '-m', 'tools.eval', '--list-models'], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and 'resnet32x4' in result.stdout, result.stderr


def test_tools_and_bench_leave_sys_path_alone():
    """They find kdzoo through the install (or run as `python -m tools.x` from the checkout), not by editing
    the import path; bench/'s scripts import their own folder's modules, which Python puts first."""
    edits = []
    for path in source_files():
        top = os.path.relpath(path, REPO).split(os.sep)[0]
        if top in ('tools', 'bench'):
            for node in ast.walk(ast.parse(open(path).read())):
                if (isinstance(node, ast.Attribute) and node.attr == 'path' and isinstance(node.value, ast.Name)
                        and node.value.id == 'sys'):
                    edits.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
    assert not edits, edits


@pytest.mark.slow
def test_editable_install_imports_without_sys_path_edits(tmp_path):
    """`pip install -e .` (here into a prefix, without build isolation: no network), then the classes import
    in a fresh interpreter started elsewhere whose path holds only the install's site folder."""
    pytest.importorskip('setuptools', minversion='70.1')
    prefix = tmp_path / 'prefix'
    before = _installed_kdzoo()
    # --ignore-installed: pip would otherwise uninstall the kdzoo this interpreter has (the venv's own editable
    # install, which the tools started by path in other tests need) before installing into the prefix
    install = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                              '--no-index', '--ignore-installed', '--prefix', str(prefix), '-e', REPO],
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
    # a tool started by its path finds kdzoo through the install alone (run_path puts nothing on sys.path),
    # and tools/ itself is no installed name
    tool = ("import runpy, site, sys; site.addsitedir(sys.argv[1]); sys.argv = sys.argv[2:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    listed = subprocess.run([sys.executable, '-I', '-c', tool, site, os.path.join(REPO, 'tools', 'eval.py'),
                             '--list-models'], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and 'resnet32x4' in listed.stdout, listed.stderr
    hidden = subprocess.run([sys.executable, '-I', '-c', 'import site, sys; site.addsitedir(sys.argv[1]); '
                             'import tools.eval', site], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert hidden.returncode != 0 and 'ModuleNotFoundError' in hidden.stderr
    # and without the install the same interpreter cannot find them
    bare = subprocess.run([sys.executable, '-I', '-S', '-c', 'import distiller_zoo'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode != 0 and 'ModuleNotFoundError' in bare.stderr
    # the interpreter's own environment keeps what it had (the venv's install, where there is one)
    assert before == _installed_kdzoo()


def _installed_kdzoo():
    """Where this interpreter's environment finds kdzoo's distribution (None without an install)."""
    from importlib import metadata
    try:
        return str(metadata.distribution('kdzoo')._path)
    except metadata.PackageNotFoundError:
        return None


def test_quickstart_installs_runtime_test_requirements_and_the_package():
    text = open(os.path.join(REPO, 'scripts', 'quickstart.sh')).read()
    assert '-r requirements.txt -r requirements-test.txt' in text
    assert '-e .' in text
