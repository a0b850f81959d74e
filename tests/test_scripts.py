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
                 if os.path.basename(p) not in ('common.sh', 'quickstart.sh'))
PARSERS = {'train_teacher.py': train_teacher.parse_args, 'train_student.py': train_student.parse_args,
           'train_online_mcl.py': train_online_mcl.parse_args}


@pytest.mark.slow
@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_script_commands_parse(script):
    result = subprocess.run(['bash', script], env=dict(os.environ, DRY_RUN='1', TRIALS='0 1'),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]
    assert commands
    for words in commands:
        assert words[0] == 'python' and words[1] in PARSERS, words
        args = PARSERS[words[1]](words[2:])
        assert args.epochs > 0
