"""Runs that end well however they end: SIGTERM and SIGINT, a full disk, a kill after the last checkpoint,
the temporary files of killed writes, and the modes of the files written."""
import errno
import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.summary.writer import record_writer

import train_student
import train_teacher
import tools.eval
from helper import checkpoint, signals
from helper.checkpoint import atomic_save, atomic_write
from helper.class_centers import write_centers
from helper.errors import KDZooError, run_cli
from helper.logger import RunLogger
import engine.run
from engine.loop import Trainer
from helper.run_files import RunFiles

from conftest import REPO


def teacher_args(save_root, *extra, epochs=3):
    return ['--model', 'resnet8', '--dataset', 'digits', '--epochs', str(epochs), '--deterministic',
            '--save_root', str(save_root), *extra]


def run_folder(save_root):
    return os.path.join(save_root, 'teachers', 'models', 'resnet8_vanilla_digits_trial_0')


def temporaries(folder):
    return [name for _, _, names in os.walk(folder) for name in names if name.endswith('.tmp')]


# ---- file modes ---------------------------------------------------------------------------------

@pytest.mark.parametrize('umask', [0o022, 0o027, 0o077])
def test_written_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    """Checkpoints, metrics.json and ND centre files: 0644 under umask 022 (others can read a teacher)."""
    previous = os.umask(umask)
    try:
        atomic_save({'model': {'w': torch.zeros(2)}}, tmp_path / 'resnet8_best.pth')
        os.makedirs(tmp_path / 'teachers' / 'models' / 'run')
        RunFiles(str(tmp_path), 'teachers', 'run', 'resnet8').write_metrics({'status': 'running'})
        write_centers(str(tmp_path / 'resnet8_best_center_emb_train.json'), torch.zeros(2, 3), {})
        with open(tmp_path / 'plain', 'w'):
            pass
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for path in (tmp_path / 'resnet8_best.pth', tmp_path / 'teachers' / 'models' / 'run' / 'metrics.json',
                 tmp_path / 'resnet8_best_center_emb_train.json', tmp_path / 'plain'):
        assert stat.S_IMODE(os.stat(path).st_mode) == expected, path


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    path = tmp_path / 'resnet8_last.pth'
    atomic_save({'epoch': 1}, path)
    os.chmod(path, 0o604)
    atomic_save({'epoch': 2}, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o604 and torch.load(path)['epoch'] == 2


# ---- temporary files of killed writes -----------------------------------------------------------

def test_the_next_start_removes_the_temporaries_of_killed_writes(tmp_path, capsys):
    files = RunFiles(str(tmp_path / 'save'), 'teachers', 'run', 'resnet8')
    files.create()
    child = os.fork()
    if child == 0:  # a writer SIGKILLed in the middle of metrics.json
        try:
            atomic_write(files.metrics, lambda f: (f.write('{' * 5000), f.flush(), time.sleep(120)))
        finally:
            os._exit(0)
    deadline = time.time() + 30
    while not temporaries(files.folder):
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    killed, = temporaries(files.folder)
    assert killed.startswith('.metrics.json.kdzoo-')

    host, hours_ago = checkpoint._host(), time.time() - 7200
    peer = os.path.join(files.folder, 'resnet8_peer0')
    os.makedirs(peer)
    stale = [os.path.join(peer, f'.resnet8_peer0_last.pth.kdzoo-{host}-{child}-x1.tmp'),  # its writer is gone
             os.path.join(files.folder, '.resnet8_best.pth.kdzoo-node7-12-x2.tmp'),       # another machine's, old
             os.path.join(files.folder, '.resnet8_last.pth.q1w2e3r4.tmp')]                # unmarked (older kdzoo), old
    kept = [os.path.join(files.folder, f'.resnet8_last.pth.kdzoo-{host}-{os.getppid()}-x3.tmp'),  # writer alive
            os.path.join(files.folder, '.resnet8_best.pth.kdzoo-node7-12-x4.tmp'),  # another machine's, recent
            os.path.join(files.folder, '.resnet8_best.pth.a1s2d3f4.tmp'),           # unmarked, recent
            os.path.join(files.folder, '.notes.tmp'), os.path.join(files.folder, 'resnet8_best.pth')]
    for path in stale + kept:
        with open(path, 'w') as f:
            f.write('x' * 100)
    for path in stale[1:]:
        os.utime(path, (hours_ago, hours_ago))
    capsys.readouterr()
    files.create()
    assert f"removed 4 temporary file(s) (5.2 kB) left in '{files.folder}'" in capsys.readouterr().out
    assert not any(os.path.exists(path) for path in stale) and all(os.path.exists(path) for path in kept)
    assert not os.path.exists(os.path.join(files.folder, killed))


# ---- a full disk ---------------------------------------------------------------------------------

class SmallDisk:
    """Files that atomic_write puts under ``root`` fail as a full disk makes them fail (OSError ENOSPC from
    ``write``, which torch.save turns into a RuntimeError) once ``full(name, bytes used)`` says so."""

    def __init__(self, monkeypatch, root):
        self.root = str(root)
        self.full = lambda name, used: False
        real_fdopen = os.fdopen
        disk = self

        class File:
            def __init__(self, f, name):
                self.f, self.name = f, name

            def write(self, data):
                if disk.full(self.name, disk.used() + len(data)):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return self.f.write(data)

            def __getattr__(self, key):
                return getattr(self.f, key)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            path = os.readlink(f'/proc/self/fd/{fd}')
            if not path.startswith(self.root):
                return f
            return File(f, os.path.basename(path)[1:].split('.kdzoo-')[0])  # the file it will be renamed to
        monkeypatch.setattr(checkpoint.os, 'fdopen', fdopen)

    def used(self):
        return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(self.root)
                   for name in names)


def after_epoch_1(monkeypatch, then):
    """Call ``then()`` once epoch 1's files are written; returns epoch 1's <name>_last.pth bytes when read."""
    original = RunLogger.epoch_end
    kept = {}

    def epoch_end(self, record, state, progress, stage='main', epochs=None):
        original(self, record, state, progress, stage, epochs)
        if record['epoch'] == 1:
            with open(self.files.last, 'rb') as f:
                kept['last'] = f.read()
            then()
    monkeypatch.setattr(RunLogger, 'epoch_end', epoch_end)
    return kept


def stop_line(capsys, argv, status=1):
    with pytest.raises(SystemExit) as stop:
        run_cli(train_teacher.main, argv)
    err = capsys.readouterr().err
    assert stop.value.code == status and 'Traceback' not in err and 'Exception in thread' not in err, err
    line, = err.strip().splitlines()
    return line


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes_once_there_is_room(tmp_path, monkeypatch, capsys):
    disk = SmallDisk(monkeypatch, tmp_path)
    limit = {}

    def fill_up():  # room left for metrics.json, not for a checkpoint
        limit['bytes'] = disk.used() + 50_000
        disk.full = lambda name, used: used > limit['bytes']
    kept = after_epoch_1(monkeypatch, fill_up)
    line = stop_line(capsys, teacher_args(tmp_path))
    folder = run_folder(tmp_path)
    assert line.startswith(f"error: no space left on the device holding '{folder}': 'resnet8_"), line
    assert 'needs about 6' in line and 'kB' in line  # a resnet8 checkpoint: some 600 kB
    assert line.endswith(f"epoch 1 of 3 is saved in '{folder}/resnet8_last.pth'; continue with --resume auto "
                         f"once there is room")
    with open(os.path.join(folder, 'resnet8_last.pth'), 'rb') as f:
        assert f.read() == kept['last']
    metrics = json.load(open(os.path.join(folder, 'metrics.json')))
    assert (metrics['status'], metrics['epochs_done'], len(metrics['history'])) == ('stopped: disk full', 1, 1)
    assert temporaries(tmp_path) == []

    disk.full = lambda name, used: False  # space was freed
    monkeypatch.undo()
    state = train_teacher.main(teacher_args(tmp_path, '--resume', 'auto'))
    assert [r['epoch'] for r in state['history']] == [1, 2, 3]
    assert json.load(open(os.path.join(folder, 'metrics.json')))['status'] == 'finished'


@pytest.mark.slow
def test_a_full_disk_at_metrics_json_is_one_line(tmp_path, monkeypatch, capsys):
    disk = SmallDisk(monkeypatch, tmp_path)
    after_epoch_1(monkeypatch, lambda: setattr(disk, 'full', lambda name, used: name == 'metrics.json'))
    line = stop_line(capsys, teacher_args(tmp_path))
    folder = run_folder(tmp_path)
    assert line.startswith(f"error: no space left on the device holding '{folder}': 'metrics.json' "), line
    assert line.endswith(f"epoch 2 of 3 is saved in '{folder}/resnet8_last.pth'; continue with --resume auto "
                         f"once there is room")
    assert torch.load(os.path.join(folder, 'resnet8_last.pth'), weights_only=True)['epoch'] == 2


@pytest.mark.slow
@pytest.mark.filterwarnings('error::pytest.PytestUnhandledThreadExceptionWarning')  # no traceback from its thread
def test_a_full_disk_under_tensorboard_is_one_line(tmp_path, monkeypatch, capsys):
    """TensorBoard writes from a thread of its own; its error is reported once, in one line."""
    after_epoch_1(monkeypatch, lambda: monkeypatch.setattr(record_writer.RecordWriter, 'write', no_space))
    line = stop_line(capsys, teacher_args(tmp_path))
    folder = run_folder(tmp_path)
    tensorboard = os.path.join(tmp_path, 'teachers', 'tensorboard', 'resnet8_vanilla_digits_trial_0')
    assert line.startswith(f"error: no space left on the device holding '{tensorboard}': this epoch's "
                           f"TensorBoard scalars did not fit"), line
    assert line.endswith(f"epoch 2 of 3 is saved in '{folder}/resnet8_last.pth'; continue with --resume auto "
                         f"once there is room")
    metrics = json.load(open(os.path.join(folder, 'metrics.json')))
    assert (metrics['status'], metrics['epochs_done']) == ('stopped: disk full', 2)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---- stop signals --------------------------------------------------------------------------------

def test_a_signal_during_an_epochs_writes_waits_for_them():
    previous = signal.getsignal(signal.SIGTERM)
    done = False
    with signals.handlers():
        with pytest.raises(signals.Interrupted) as stop:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)  # the handler runs here, and must not raise
                done = True
        assert done and stop.value.signum == signal.SIGTERM and stop.value.exit_status == 143
        os.kill(os.getpid(), signal.SIGTERM)  # a second one does not break into the clean-up
        time.sleep(0.2)
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_keeps_the_last_epoch_and_says_how_to_go_on(signum, tmp_path):
    """What SLURM, Kubernetes and torchrun send (SIGTERM), or Ctrl-C: the run stops within seconds, its last
    complete epoch is kept and recorded as 'interrupted', one line says how to go on, exit 128 + signal."""
    save = tmp_path / 'save'
    job = subprocess.Popen([sys.executable, os.path.join(REPO, 'train_teacher.py'), *teacher_args(save, epochs=100)],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONUNBUFFERED='1'))
    folder = run_folder(save)
    deadline = time.time() + 180
    try:
        while not os.path.exists(os.path.join(folder, 'metrics.json')):
            assert job.poll() is None and time.time() < deadline, job.communicate()
            time.sleep(0.1)
        job.send_signal(signum)
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 128 + signum, stderr
    last = os.path.join(folder, 'resnet8_last.pth')
    saved = torch.load(last, weights_only=True)['epoch']
    assert stderr.strip().splitlines()[-1] == (f"interrupted by {signal.Signals(signum).name}: epoch {saved} of "
                                               f"100 is saved in '{last}'; continue with --resume auto")
    assert 'Traceback' not in stderr
    metrics = json.load(open(os.path.join(folder, 'metrics.json')))
    assert (metrics['status'], metrics['epochs_done'], len(metrics['history'])) == ('interrupted', saved, saved)
    if signum == signal.SIGTERM:
        state = train_teacher.main(teacher_args(save, '--resume', 'auto', epochs=saved + 1))
        assert len(state['history']) == saved + 1
        assert json.load(open(os.path.join(folder, 'metrics.json')))['status'] == 'finished'


# ---- a kill after the last checkpoint -----------------------------------------------------------

class Killed(BaseException):
    """SIGKILL as far as the run can tell: nothing after it runs (no handler, no status written)."""


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp('teacher')
    train_teacher.main(teacher_args(root, epochs=1))
    return os.path.join(run_folder(root), 'resnet8_best.pth')


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_is_finished_by_resume_auto(teacher, tmp_path, monkeypatch, capsys):
    """SimKD: killed after the last epoch's _last.pth, before <s>_deploy.pth and 'finished'. --resume auto
    writes both; on the finished run it is one line, said before data are read or folders made."""
    argv = ['--path_t', teacher, '--distill', 'simkd', '--model_s', 'resnet8', '--dataset', 'digits', '--epochs',
            '2', '--deterministic', '--precision', 'fp32', '--skip-validation', '--save_root', str(tmp_path)]
    original = Trainer.save

    def save_then_die(self, epoch, top1, is_best):
        original(self, epoch, top1, is_best)
        if epoch == self.epochs:
            raise Killed
    monkeypatch.setattr(Trainer, 'save', save_then_die)
    with pytest.raises(Killed):
        train_student.main(argv)
    monkeypatch.setattr(Trainer, 'save', original)
    folder, = glob.glob(os.path.join(tmp_path, 'students', 'models', '*simkd*'))
    deploy, metrics = os.path.join(folder, 'resnet8_deploy.pth'), os.path.join(folder, 'metrics.json')
    assert torch.load(os.path.join(folder, 'resnet8_last.pth'), weights_only=True)['epoch'] == 2
    assert not os.path.exists(deploy) and json.load(open(metrics))['epochs_done'] == 1

    capsys.readouterr()
    state = train_student.main([*argv, '--resume', 'auto'])
    assert 'trained all 2 epochs but stopped before its closing writes; finishing it' in capsys.readouterr().out
    recorded = json.load(open(metrics))
    assert (recorded['status'], recorded['epochs_done'], len(recorded['history'])) == ('finished', 2, 2)
    assert [r['epoch'] for r in state['history']] == [1, 2]
    evaluated = tools.eval.main(['--path', deploy, '--num_workers', '0', '--precision', 'fp32'])
    assert evaluated['top1'] == recorded['last']['top1']  # the deployed network is the last epoch's

    tensorboard = os.path.join(tmp_path, 'students', 'tensorboard', os.path.basename(folder))
    shutil.rmtree(tensorboard)

    def no_data(*args, **kwargs):
        raise AssertionError('data were read for a run that had finished')
    monkeypatch.setattr(engine.run, 'devices_and_data', no_data)
    with pytest.raises(KDZooError, match=r"already finished 2 of 2 epochs; nothing to resume \(pass a larger "
                                         r"--epochs to train on\)"):
        train_student.main([*argv, '--resume', 'auto'])
    assert not os.path.exists(tensorboard)
