"""A table script run for real on a tiny table (tests/test_scripts.py, tests/test_slurm.py): the mdistiller script
with PAIRS=resnet8:resnet8 and two methods on the first digits, so that each pack trains in a second or two.

The scripts start their own interpreters; a ``sitecustomize`` on their PYTHONPATH shrinks the digits there (as
conftest.first_digits does in-process) and, with TINY_EPOCH_PAUSE set, waits that many seconds after each
epoch's files are written, leaving a test time to stop a run between two epochs."""
import os
import shutil
import subprocess
import sys

import torch

from conftest import REPO

SCRIPT = os.path.join(REPO, 'scripts', 'run_mdistiller_dkd_reviewkd.sh')
SITE = '''import os
import time

import dataset.digits
from engine.loop import Trainer

_full = dataset.digits.digits_split


def _first():
    train_x, train_y, test_x, test_y = _full()
    return train_x[:{n_train}], train_y[:{n_train}], test_x[:{n_test}], test_y[:{n_test}]


dataset.digits.digits_split = _first
_end_epoch = Trainer.end_epoch


def _end_epoch_then_pause(self, *args, **kwargs):
    result = _end_epoch(self, *args, **kwargs)
    time.sleep(float(os.environ.get('TINY_EPOCH_PAUSE') or 0))
    return result


Trainer.end_epoch = _end_epoch_then_pause
'''


def table_env(tmp_path, digits_teacher, save_root, methods='kd dist', trials='0 1', epochs=3, n_train=128, n_test=64):
    """The environment of a tiny table run: the digits teacher where scripts/common.sh's teacher() looks, the
    scripts' variables, EXTRA with the digits recipe and ``save_root``, one thread per process."""
    site = tmp_path / 'site'
    site.mkdir(exist_ok=True)
    (site / 'sitecustomize.py').write_text(SITE.format(n_train=n_train, n_test=n_test))
    teachers = tmp_path / 'teachers'
    if not teachers.exists():
        (teachers / 'resnet8_vanilla').mkdir(parents=True)
        shutil.copy(digits_teacher / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0' / 'resnet8_best.pth',
                    teachers / 'resnet8_vanilla' / 'resnet8_best.pth')
    clean = {k: v for k, v in os.environ.items() if k not in ('EXTRA', 'PACK', 'PACK_MAX', 'RESUME', 'SLURM',
                                                              'DRY_RUN', 'TINY_EPOCH_PAUSE')}
    return dict(clean, PYTHON=sys.executable, PYTHONPATH=f'{site}{os.pathsep}{REPO}', OMP_NUM_THREADS='1',
                TEACHERS=str(teachers), PAIRS='resnet8:resnet8', METHODS=methods, TRIALS=trials,
                EXTRA=f'--dataset digits --epochs {epochs} --lr_decay_epochs 2 --batch_size 64 --deterministic '
                      f'--skip-validation --save_root {save_root}')


def run_table(env, timeout=300):
    result = subprocess.run(['bash', SCRIPT], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def last_weights(save_root):
    """{run folder name: the student's weights in its _last.pth} of every student under ``save_root``."""
    found = {}
    folder = os.path.join(save_root, 'students', 'models')
    for name in sorted(os.listdir(folder)):
        found[name] = torch.load(os.path.join(folder, name, 'resnet8_last.pth'), map_location='cpu',
                                 weights_only=False)['model']
    return found


def assert_same_weights(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
