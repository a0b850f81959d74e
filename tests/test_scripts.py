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
                 if os.path.basename(p) not in ('common.sh', 'quickstart.sh'))
PARSERS = {'train_teacher.py': train_teacher.parse_args, 'train_student.py': train_student.parse_args,
           'train_online_mcl.py': train_online_mcl.parse_args}
# The scripts whose cells distil students from a teacher (the others train teachers or online peers).
TABLES = [p for p in SCRIPTS if 'student_cell' in open(p).read()]


def dry_run(script, **env):
    result = subprocess.run(['bash', script], env=dict(os.environ, DRY_RUN='1', TRIALS='0 1', **env),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]
    assert commands
    return commands


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_script_commands_parse(script):
    for words in dry_run(script):
        assert words[0] == 'python' and words[1] in PARSERS, words
        args = PARSERS[words[1]](words[2:])
        assert args.epochs > 0


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
        args = train_student.parse_args(words[2:])
        keys[(args.path_t, args.trial, args.epochs, str(args.lr_decay_epochs), args.batch_size)] += 1
    assert max(keys.values()) == 1


def test_pack_member_refuses_values_it_cannot_carry(tmp_path):
    script = tmp_path / 'cell.sh'
    script.write_text(f'source {REPO}/scripts/common.sh\npack_member kd -r 0.1 --nd_weight 0.5 --plain_ft -b -1\n'
                      f'pack_member crd --save_root a:b\n')
    result = subprocess.run(['bash', str(script)], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines()[0] == 'kd:r=0.1:nd_weight=0.5:plain_ft:b=-1'
    assert "cannot pack" in result.stderr and "PACK=0" in result.stderr
