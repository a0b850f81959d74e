"""Every command of the experiment scripts is one our argument parsers accept (dry run, no training), and
the table scripts' packs train exactly the cells of their one-run-per-cell form."""
import collections
import json
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
    clean = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'EXTRA', 'PACK', 'PACK_MAX', 'SLURM', 'RESUME')}
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


def test_extra_ends_every_pack_members_flags():
    """EXTRA's flags reach every member of a pack after the member's own (ND's lr 0.1/0.02 is a member flag);
    a value a member cannot hold (':' or ',') reaches the shared command line only."""
    script = os.path.join(REPO, 'scripts', 'run_nd_table.sh')
    packed = dry_run(script, TRIALS='0', EXTRA='--learning_rate 0.3 --dist-url tcp://127.0.0.1:23999')
    runs = student_runs(packed)
    assert len(runs) == 24  # 6 pairs x 4 methods
    assert {args['learning_rate'] for args in runs.values()} == {0.3}
    assert {args['dist_url'] for args in runs.values()} == {'tcp://127.0.0.1:23999'}
    assert student_runs(packed) == student_runs(dry_run(script, TRIALS='0', PACK='0',
                                                        EXTRA='--learning_rate 0.3 --dist-url tcp://127.0.0.1:23999'))


def test_slurm_dry_run_writes_one_task_per_pack(tmp_path):
    """SLURM=1 writes the commands, each through tools.table_cell, one line per pack (per cell with PACK=0),
    and prints the sbatch command of the array with SBATCH_ARGS in it; DRY_RUN submits nothing."""
    script = os.path.join(REPO, 'scripts', 'run_ntce_tables.sh')
    # 6 teachers x 2 recipes x 2 trials; 11 pairs x (MKL, NTCE-KD) x 2 trials with PACK=0
    for pack, count in (('1', 24), ('0', 44)):
        logs = tmp_path / f'pack{pack}'
        result = subprocess.run(['bash', script], capture_output=True, text=True, timeout=120, env=dict(
            os.environ, DRY_RUN='1', SLURM='1', SLURM_LOGS=str(logs), TRIALS='0 1', PACK=pack, PYTHON='py',
            SBATCH_ARGS='--partition gpu --gpus 1'))
        assert result.returncode == 0, result.stderr
        *printed, submit = result.stdout.splitlines()
        tasks = glob.glob(str(logs / 'run_ntce_tables_*' / 'tasks.txt'))
        assert len(tasks) == 1
        lines = [shlex.split(line) for line in open(tasks[0]).read().splitlines()]
        assert len(lines) == len(printed) == count
        for words, shown in zip(lines, printed):
            assert words[:3] == ['py', '-m', 'tools.table_cell'] and words[3:] == shlex.split(shown)[1:]
        submit = shlex.split(submit)
        assert submit[0] == 'sbatch' and f'--array=0-{count - 1}' in submit and submit[-1] == tasks[0]
        assert submit[-2] == 'scripts/slurm/table_task.sbatch' and ['--partition', 'gpu', '--gpus', '1'] == \
            submit[-6:-2]


def test_requeueable_passes_the_stop_signal_on_and_requeues(tmp_path):
    """requeueable (scripts/slurm/requeue.sh): SIGTERM to the batch shell reaches the command, and a command
    that then exits 143 has its array task requeued; one that ends by itself is not."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'scontrol').write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.txt\n')
    (bin_dir / 'scontrol').chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_ARRAY_JOB_ID='7',
               SLURM_ARRAY_TASK_ID='1', SLURM_JOB_ID='9')
    task = ('source scripts/slurm/requeue.sh; '
            'requeueable sh -c \'trap "echo got TERM; exit 143" TERM; echo started; while :; do sleep 0.1; done\'')
    shell = subprocess.Popen(['bash', '-c', task], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert shell.stdout.readline() == 'started\n'
    shell.terminate()
    out = shell.communicate(timeout=30)[0]
    assert shell.returncode == 143 and 'got TERM' in out and 'requeueing 7_1' in out
    assert (tmp_path / 'scontrol.txt').read_text() == 'requeue 7_1\n'
    done = subprocess.run(['bash', '-c', 'source scripts/slurm/requeue.sh; requeueable sh -c "exit 3"'], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and 'requeue' not in done.stdout
    assert (tmp_path / 'scontrol.txt').read_text() == 'requeue 7_1\n'


@pytest.mark.slow
def test_running_a_table_again_finishes_what_it_started(tmp_path, digits_teacher):
    """Run twice, a table script does the work once: finished runs are skipped (their files untouched), a pack
    with a finished member and a new one trains the new one alone, a larger --epochs continues every run."""
    from tiny_tables import run_table, table_env
    save = tmp_path / 'save'
    run_table(table_env(tmp_path, digits_teacher, save, methods='kd', trials='0', epochs=2))
    kd = glob.glob(str(save / 'students' / 'models' / '*_kd_*' / 'resnet8_last.pth'))
    assert len(kd) == 1
    stamp = os.stat(kd[0]).st_mtime_ns
    out = run_table(table_env(tmp_path, digits_teacher, save, methods='kd dist', trials='0', epochs=2))
    assert 'resuming (0 interrupted, 1 finished, 1 not started of 2 runs)' in out
    assert os.stat(kd[0]).st_mtime_ns == stamp
    files = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(save / '**'), recursive=True) if os.path.isfile(p)}
    out = run_table(table_env(tmp_path, digits_teacher, save, methods='kd dist', trials='0', epochs=2))
    assert out.count('already finished 2 of 2 epochs') == 2 and 'resuming' not in out
    assert {p: os.stat(p).st_mtime_ns for p in files} == files
    out = run_table(table_env(tmp_path, digits_teacher, save, methods='kd dist', trials='0', epochs=3))
    assert 'resuming (2 interrupted, 0 finished, 0 not started of 2 runs)' in out
    for metrics in glob.glob(str(save / 'students' / 'models' / '*' / 'metrics.json')):
        summary = json.load(open(metrics))
        assert summary['status'] == 'finished' and summary['epochs_done'] == 3


def fake_run(files, epochs_done, finished):
    """A run folder as training leaves it: a last checkpoint after ``epochs_done`` epochs, metrics.json."""
    import torch
    os.makedirs(files.folder, exist_ok=True)
    torch.save({'model': {}, 'kdzoo': {'epoch': epochs_done, 'stage': 'main'}}, files.last)
    with open(files.metrics, 'w') as f:
        json.dump({'status': 'finished' if finished else 'interrupted', 'epochs_done': epochs_done}, f)


def test_table_cell_skips_resumes_or_starts_each_kind_of_run(tmp_path, capsys):
    """tools/table_cell.py decides per command from its runs' files: all finished -> nothing to run, some
    checkpoint -> --resume auto, none -> as written; --resume auto in the command (EXTRA) is its own decision,
    --overwrite and a --resume path are run as written."""
    from tools.table_cell import plan, run_files
    save = ['--save_root', str(tmp_path), '--epochs', '2']
    teacher = ['--model', 'resnet8', '--dataset', 'digits', *save]
    online = ['--arch', 'lmcl_resnet32_cifar', *save]
    pack = ['--path_t', str(tmp_path / 'resnet8_vanilla' / 'resnet8_best.pth'), '--dataset', 'digits',
            '--model_s', 'resnet8', '--distill', 'kd,dist', *save]
    for script, argv in (('train_teacher.py', teacher), ('train_online_mcl.py', online), ('train_student.py', pack)):
        assert plan(script, argv)[1] == argv
        assert plan(script, argv + ['--resume', 'auto'])[1] == argv
        module, _ = plan(script, argv)
        args = module.parse_args(argv)
        runs = run_files(module, args)
        fake_run(runs[0], 1, finished=False)
        assert plan(script, argv)[1] == argv + ['--resume', 'auto']
        for files in runs:
            fake_run(files, 2, finished=True)
        assert plan(script, argv)[1] is None
        assert 'already finished 2 of 2 epochs' in capsys.readouterr().out
        assert plan(script, argv + ['--epochs', '3'])[1] == argv + ['--epochs', '3', '--resume', 'auto']
        assert plan(script, argv + ['--overwrite'])[1] == argv + ['--overwrite']
    # EXTRA="--resume auto" reaches a pack's members too: with no run yet, every trace of it goes
    fresh = ['--save_root', str(tmp_path / 'fresh'), '--epochs', '2']
    members = pack[:6] + ['--distill', 'kd:resume=auto,dist:resume=auto', *fresh, '--resume', 'auto']
    assert plan('train_student.py', members)[1] == pack[:6] + ['--distill', 'kd,dist', *fresh]


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(REPO, 'scripts', 'slurm', '*'))), ids=os.path.basename)
def test_slurm_files_are_valid_bash(path):
    """The sbatch templates and requeue.sh parse (Slurm only reports a syntax error once a job runs)."""
    result = subprocess.run(['bash', '-n', path], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


# FCFD's classification/README.md list of CIFAR-100 runs (LiuDongyang6/FCFD), as teacher:student
FCFD_README_PAIRS = {('resnet32x4', 'resnet8x4'), ('resnet56', 'resnet20'), ('wrn_40_2', 'wrn_16_2'),
                     ('wrn_40_2', 'wrn_40_1'), ('vgg13', 'vgg8'), ('resnet32x4', 'ShuffleV1'),
                     ('wrn_40_2', 'ShuffleV1'), ('vgg13', 'MobileNetV2'), ('ResNet50', 'MobileNetV2'),
                     ('resnet32x4', 'ShuffleV2')}


def test_feature_tables_run_catkd_and_fcfd_on_their_official_configs_pairs():
    """catkd runs on the pairs of CAT-KD's CIFAR configs (the method's per-pair table) and fcfd on FCFD's README
    list, fcfd alone with Nesterov momentum (FCFD's cifar/main.py default), both on the default recipe."""
    from distiller_zoo.CATKD import PAIRS
    script = os.path.join(REPO, 'scripts', 'run_feature_tables.sh')
    cells = {}
    for words in dry_run(script, METHODS='catkd fcfd', PACK='0', TRIALS='0'):
        args = train_student.parse_args(words[2:])
        cells.setdefault(args.distill, set()).add((args.model_t, args.model_s))
        assert args.nesterov == (args.distill == 'fcfd'), words
        assert (args.epochs, args.batch_size) == (240, 64) and args.learning_rate in (0.05, 0.01), words
    imagenet = {('ResNet34', 'ResNet18'), ('ResNet50', 'MobileNetV1')}
    assert cells == {'catkd': set(PAIRS) - imagenet, 'fcfd': FCFD_README_PAIRS}
