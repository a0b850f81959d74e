"""Every command of the experiment scripts is one our argument parsers accept (dry run, no training)."""
import glob
import os
import shlex
import subprocess

import pytest

import train_online_mcl
import train_student
import train_teacher
from conftest import REPO

SCRIPTS = sorted(p for p in glob.glob(os.path.join(REPO, 'scripts', '*.sh'))
                 if os.path.basename(p) not in ('common.sh', 'quickstart.sh', 'fetch_teachers.sh'))
# the interpreter common.sh picks: the project's .venv when there is one (as after the quickstart), else python
PYTHON = '.venv/bin/python' if os.access(os.path.join(REPO, '.venv', 'bin', 'python'), os.X_OK) else 'python'
PARSERS = {'train_teacher.py': train_teacher.parse_args, 'train_student.py': train_student.parse_args,
           'train_online_mcl.py': train_online_mcl.parse_args}


@pytest.mark.slow
@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_script_commands_parse(script):
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'EXTRA')}
    result = subprocess.run(['bash', script], env=dict(env, DRY_RUN='1', TRIALS='0 1'),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]
    assert commands
    for words in commands:
        assert words[0] == PYTHON and words[1] in PARSERS, words
        args = PARSERS[words[1]](words[2:])
        assert args.epochs > 0


def test_extra_flags_reach_every_command_last():
    script = os.path.join(REPO, 'scripts', 'run_ntce_tables.sh')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    result = subprocess.run(['bash', script], env=dict(env, DRY_RUN='1', EXTRA='--epochs 1 --save_freq 1'),
                            capture_output=True, text=True, timeout=60, check=True)
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(commands) == 22  # 11 pairs x (MKL, NTCE-KD)
    for words in commands:
        assert words[-4:] == ['--epochs', '1', '--save_freq', '1']
        args = PARSERS[words[1]](words[2:])
        assert args.epochs == 1 and args.save_freq == 1  # the last --epochs wins over the NTCE budget's 480


def test_scripts_use_the_project_venv_when_present(tmp_path):
    """A checkout with .venv/bin/python (what the quickstart makes) runs the tables with it, unactivated."""
    copy = tmp_path / 'kdzoo'
    (copy / 'scripts').mkdir(parents=True)
    for name in ('common.sh', 'run_cifar_teachers.sh'):
        (copy / 'scripts' / name).write_text(open(os.path.join(REPO, 'scripts', name)).read())
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    script = str(copy / 'scripts' / 'run_cifar_teachers.sh')
    bare = subprocess.run(['bash', script], env=dict(env, DRY_RUN='1'), capture_output=True, text=True, check=True)
    assert bare.stdout.split()[0] == 'python'
    (copy / '.venv' / 'bin').mkdir(parents=True)
    (copy / '.venv' / 'bin' / 'python').write_text('#!/bin/sh\n')
    (copy / '.venv' / 'bin' / 'python').chmod(0o755)
    venv = subprocess.run(['bash', script], env=dict(env, DRY_RUN='1'), capture_output=True, text=True, check=True)
    assert {line.split()[0] for line in venv.stdout.splitlines()} == {'.venv/bin/python'}
    chosen = subprocess.run(['bash', script], env=dict(env, DRY_RUN='1', PYTHON='/opt/py/bin/python3'),
                            capture_output=True, text=True, check=True)
    assert chosen.stdout.split()[0] == '/opt/py/bin/python3'
