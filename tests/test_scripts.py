"""Every command of the experiment scripts is one our argument parsers accept (dry run, no training), and
the table scripts' packs train exactly the cells of their one-run-per-cell form."""
import collections
import glob
import os
import shlex
import subprocess

import pytest

import train_online_mcl
import train_student
import train_teacher
from conftest import REPO
from engine.student import student_files

SCRIPTS = sorted(p for p in glob.glob(os.path.join(REPO, 'scripts', '*.sh'))
                 if os.path.basename(p) not in ('common.sh', 'quickstart.sh', 'fetch_teachers.sh'))
# the interpreter common.sh picks: the project's .venv when there is one (as after the quickstart), else python
PYTHON = '.venv/bin/python' if os.access(os.path.join(REPO, '.venv', 'bin', 'python'), os.X_OK) else 'python'
PARSERS = {'train_teacher.py': train_teacher.parse_args, 'train_student.py': train_student.parse_args,
           'train_online_mcl.py': train_online_mcl.parse_args}
# The scripts whose cells distil students from a teacher (the others train teachers or online peers).
TABLES = [p for p in SCRIPTS if 'student_cell' in open(p).read()]


def dry_run(script, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'EXTRA', 'PACK', 'PACK_MAX')}
    result = subprocess.run(['bash', script], env={**clean, 'DRY_RUN': '1', 'TRIALS': '0 1', **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]
    assert commands
    return commands


@pytest.mark.slow
@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_script_commands_parse(script):
    for words in dry_run(script):
        assert words[0] == PYTHON and words[1] in PARSERS, words
        args = PARSERS[words[1]](words[2:])
        assert args.epochs > 0


def test_extra_flags_reach_every_command_last():
    script = os.path.join(REPO, 'scripts', 'run_ntce_tables.sh')
    commands = dry_run(script, PACK='0', TRIALS='0', EXTRA='--epochs 1 --save_freq 1')
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


def student_runs(commands):
    """(run folder, the member's settled arguments) of every student a list of commands trains."""
    runs = {}
    for words in commands:
        if words[1] != 'train_student.py':
            continue
        args = train_student.parse_args(words[2:])
        for member in getattr(args, 'members', [args]):
            folder = student_files(member).folder
            assert folder not in runs, folder
            runs[folder] = {k: v for k, v in vars(member).items() if k not in ('weights_note', 'lr_note')}
    return runs


@pytest.mark.parametrize('script', TABLES, ids=os.path.basename)
def test_table_packs_train_exactly_the_cells_of_one_run_per_cell(script):
    """The packed commands (default) train the same runs with the same settings as PACK=0's one command
    per cell, in fewer processes; no pack exceeds PACK_MAX; with PACK_MAX=0 a teacher, recipe and trial
    make exactly one pack."""
    packed, single = dry_run(script), dry_run(script, PACK='0')
    assert student_runs(packed) == student_runs(single)
    assert len(packed) < len(single)
    sizes = [len(train_student.parse_args(w[2:]).members) for w in packed if '--distill' in w
             and ',' in w[w.index('--distill') + 1]]
    assert sizes and max(sizes) <= 8
    unlimited = dry_run(script, PACK_MAX='0')
    assert student_runs(unlimited) == student_runs(single)
    keys = collections.Counter()
    for words in unlimited:
        if words[1] != 'train_student.py':
            continue  # ONE's online runs in the ImageNet script
        # the shared command line: teacher, recipe and trial (and flags a member cannot carry, such as SSKD's
        # head-stage recipe, which make a pack of their own)
        shared = [w for i, w in enumerate(words) if w not in ('--distill', '--model_s')
                  and words[i - 1] not in ('--distill', '--model_s')]
        keys[tuple(shared)] += 1
    assert max(keys.values()) == 1


def test_pack_member_refuses_values_it_cannot_carry(tmp_path):
    script = tmp_path / 'cell.sh'
    script.write_text(f'source {REPO}/scripts/common.sh\npack_member kd -r 0.1 --nd_weight 0.5 --plain_ft -b -1\n'
                      f'pack_member crd --save_root a:b\n')
    result = subprocess.run(['bash', str(script)], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines()[0] == 'kd:r=0.1:nd_weight=0.5:plain_ft:b=-1'
    assert "cannot pack" in result.stderr and "PACK=0" in result.stderr
