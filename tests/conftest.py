"""Shared test fixtures: the digits data and a digits teacher made once per session, fake data sets on disk,
and helpers to run the command-line scripts."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

# One compute thread per process, here and in every script a test starts: on the 2-core CI machine two
# OpenMP threads per process, with a subprocess or a second DDP worker beside them, spin-wait on each
# other and make small convolutions many times slower.
os.environ['OMP_NUM_THREADS'] = '1'
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dataset.digits  # noqa: E402
from bench.fake_cifar import write_fake_cifar100  # noqa: E402,F401  (the benchmarks write the same data)


@pytest.fixture(scope='session', autouse=True)
def digits_once():
    """Read and enlarge scikit-learn's digits once per session, not at every build_data('digits') (a fifth
    of a second each, a few hundred times in the suite): dataset.digits.digits_split serves copies of the
    one split, so a test that changes its tensors changes nothing for the next. Yields that split."""
    split = dataset.digits.digits_split()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dataset.digits, 'digits_split', lambda: tuple(t.clone() for t in split))
        yield split


def first_digits(patch, n_train, n_test=None):
    """Through ``patch`` (a pytest MonkeyPatch), make build_data('digits') serve the first ``n_train`` training
    and ``n_test`` test digits (every test digit when None) of what it serves now."""
    full = dataset.digits.digits_split

    def first():
        train_x, train_y, test_x, test_y = full()
        return train_x[:n_train], train_y[:n_train], test_x[:n_test], test_y[:n_test]
    patch.setattr(dataset.digits, 'digits_split', first)


def small_digits_fixture(n_train, n_test):
    """A module-scoped autouse fixture that keeps a module's runs fast on the first ``n_train`` training and
    ``n_test`` test digits; a module takes it with ``small_digits = small_digits_fixture(192, 64)``."""
    @pytest.fixture(scope='module', autouse=True)
    def small_digits():
        with pytest.MonkeyPatch.context() as patch:
            first_digits(patch, n_train, n_test)
            yield
    return small_digits


def train_digits_teacher(root, model, *flags):
    """Train a ``model`` teacher on the digits through train_teacher.main, --deterministic, ``flags`` after
    (e.g. --epochs 1), under the save root ``root`` (a pathlib.Path); returns its best checkpoint's path."""
    import train_teacher
    train_teacher.main(['--model', model, '--dataset', 'digits', '--deterministic', '--save_root', str(root), *flags])
    return str(root / 'teachers' / 'models' / f'{model}_vanilla_digits_trial_0' / f'{model}_best.pth')


def shared_digits_teacher(tmp_path_factory, whole_digits, model, *flags):
    """``train_digits_teacher(root, model, *flags)`` on ``whole_digits`` (the ``digits_once`` split) once per test
    session, whichever module and xdist worker asks first: it trains under a file lock in the session's
    temporary folder, which the workers share, and the others wait for it and read the same files. Returns the
    best checkpoint's path. Tests only read it (its runs are --deterministic: which worker trained it changes
    nothing)."""
    from filelock import FileLock
    base = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        base = base.parent  # the folder above the workers' own
    root = base / ('shared_teacher_' + '_'.join([model, *flags]).replace('-', ''))
    with FileLock(f'{root}.lock'):
        done = root / 'done'
        if not done.exists():
            with pytest.MonkeyPatch.context() as patch:
                # the whole data set, also when the module that asks first has shrunk it for its own runs
                patch.setattr(dataset.digits, 'digits_split', lambda: tuple(t.clone() for t in whole_digits))
                done_path = train_digits_teacher(root, model, *flags)
            done.write_text(done_path)
        return done.read_text()


@pytest.fixture(scope='session')
def digits_teacher(tmp_path_factory, digits_once):
    """A resnet8 teacher trained once per session through train_teacher.main: one epoch on the whole digits
    data, --deterministic, default flags otherwise. Returns the save root that holds
    teachers/models/resnet8_vanilla_digits_trial_0/ (resnet8_best.pth, resnet8_last.pth, metrics.json).
    Shared by every module that asks for it: copy it (shutil.copytree) before running anything that may
    write beside it."""
    import pathlib
    best = shared_digits_teacher(tmp_path_factory, digits_once, 'resnet8', '--epochs', '1')
    return pathlib.Path(best).parents[3]


def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar NumPy function f at x."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad


def write_fake_cifar10(root, n_train=100, n_test=50, seed=0):
    """CIFAR-10 in its archive's on-disk format (cifar-10-batches-py: data_batch_1..5 and test_batch, python
    pickles with b'labels') with random pixels; the training images are split over the five batch files."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)
    train = np.array_split(np.arange(n_train), 5)
    files = [(f'data_batch_{i + 1}', part) for i, part in enumerate(train)] + [('test_batch', np.arange(n_test))]
    for name, index in files:
        labels = (index % 10).tolist()
        data = rng.integers(0, 256, size=(len(index), 3072), dtype=np.uint8)
        entry = {b'batch_label': name.encode(), b'labels': labels, b'data': data,
                 b'filenames': [f'img{i}.png'.encode() for i in index]}
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(entry, f)
    with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump({b'label_names': [f'c{i}'.encode() for i in range(10)], b'num_vis': 3072,
                     b'num_cases_per_batch': 10000}, f)
    return root


@pytest.fixture
def fake_cifar(tmp_path):
    return write_fake_cifar100(str(tmp_path / 'data'))


@pytest.fixture
def fake_cifar10(tmp_path):
    return write_fake_cifar10(str(tmp_path / 'data'))


def run_script(script, *args, cwd, timeout=300):
    """Run one of the repository's scripts as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_script_forked(script, *args, cwd, timeout=120):
    """``run_script``'s result from a fork of this test process instead of a new interpreter: the child runs the
    script as ``__main__`` (``runpy``, as ``python script`` does) with its own argv, working folder, stdout and
    stderr, and exits with the script's status. For the scripts' error paths, which exit before any training:
    there, starting Python and importing torch would be nine tenths of the cost. The child is a copy, so nothing
    it does reaches the tests that follow; it leaves through os._exit, past this process's exit handlers."""
    import runpy
    import tempfile
    import time
    import traceback
    path = os.path.join(REPO, script)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = open(1, 'w', buffering=1, closefd=False)  # not the parent's pytest capture
                sys.stderr = open(2, 'w', buffering=1, closefd=False)
                os.chdir(cwd)
                sys.argv = [path, *map(str, args)]
                sys.path[0] = os.path.dirname(path)
                try:
                    runpy.run_path(path, run_name='__main__')
                    code = 0
                except SystemExit as exit_:
                    if exit_.code is None or isinstance(exit_.code, int):
                        code = exit_.code or 0
                    else:  # sys.exit('message'), as the interpreter does
                        print(exit_.code, file=sys.stderr)
                        code = 1
                except BaseException:
                    traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired([script, *map(str, args)], timeout)
            time.sleep(0.02)
        texts = []
        for stream in (out, err):
            stream.seek(0)
            texts.append(stream.read().decode('utf-8', 'replace'))
    return subprocess.CompletedProcess([script, *map(str, args)], os.waitstatus_to_exitcode(status), *texts)


def crash_after_epoch(monkeypatch, epoch=1):
    """Make the training loop stop as a kill would, right after it wrote ``epoch``'s checkpoints; returns the
    real ``Trainer.save`` (set it back to resume)."""
    from engine.loop import Trainer
    original = Trainer.save

    def save(self, done, top1, is_best):
        original(self, done, top1, is_best)
        if done == epoch:
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, 'save', save)
    return original


def killed_then_resumed(monkeypatch, run, root, epoch=1):
    """``run(root, *flags)`` killed right after ``epoch``'s checkpoints, then run again with --resume auto: the
    resumed run's final state (compare it with an uninterrupted run's)."""
    from engine.loop import Trainer
    original_save = crash_after_epoch(monkeypatch, epoch)
    with pytest.raises(KeyboardInterrupt):
        run(root)
    monkeypatch.setattr(Trainer, 'save', original_save)
    return run(root, '--resume', 'auto')

