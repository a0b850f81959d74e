"""Every tool that reads a checkpoint, over every kind of bad file: one line, a non-zero exit, nothing changed.

Which exception the unpickler raises depends on the file's bytes (random bytes starting with 'h' made it
raise KeyError, others IndexError, OverflowError, MemoryError), so each kind of damage is tried in every tool.
The tools run in this process (run_cli, as their command lines do) so that the matrix stays fast; warnings
are recorded, since on the command line they would be lines of their own."""
import json
import os
import random
import shutil
import warnings

import pytest
import torch

import train_online_mcl
import train_student
import train_teacher
from helper.errors import run_cli
from test_bad_input import snapshot
from tools import eval as eval_tool
from tools import nd_centers, report


def random_bytes(first, size=4096, seed=0):
    """``size`` seeded random bytes after ``first`` (the unpickler's opcode: it picks the exception)."""
    rng = random.Random(seed)
    return bytes([first]) + bytes(rng.randrange(256) for _ in range(size - 1))


@pytest.fixture(scope='module')
def bad(tmp_path_factory, digits_teacher):
    """A copy of the session's digits teacher (resnet8) and a file of each kind of damage beside it."""
    root = tmp_path_factory.mktemp('bad_files')
    shutil.copytree(digits_teacher, root / 'save')
    teacher = root / 'save' / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0' / 'resnet8_best.pth'
    good = teacher.read_bytes()
    files = root / 'files'
    files.mkdir()
    kinds = {
        'random bytes (KeyError)': random_bytes(ord('h')),
        'random bytes (IndexError)': random_bytes(ord('.')),
        'random bytes (MemoryError)': random_bytes(141),
        'random bytes (OverflowError)': random_bytes(142),
        'random bytes': os.urandom(4096),
        'truncated': good[:len(good) // 2],
        'empty': b'',
        'JSON': json.dumps({'model': {'fc.weight': [1.0]}, 'epoch': 1}).encode(),
    }
    paths = {}
    for i, (kind, content) in enumerate(kinds.items()):
        paths[kind] = files / f'bad{i}.pth'
        paths[kind].write_bytes(content)
    paths['a directory'] = files / 'folder.pth'
    paths['a directory'].mkdir()
    # a checkpoint of another kind: an optimiser's state alone, and a network of another architecture
    torch.save({'optimizer': {'state': {}, 'param_groups': []}, 'epoch': 3}, files / 'optimizer.pth')
    paths['an optimiser state'] = files / 'optimizer.pth'
    from models import model_dict
    torch.save({'model': model_dict['resnet20'](num_classes=10).state_dict()}, files / 'resnet20.pth')
    paths['another architecture'] = files / 'resnet20.pth'
    # kdzoo resume checkpoints (a run's <name>_last.pth) of another architecture, and of another method
    resume = dict(epoch=0, stage='main', objective={})
    torch.save({'model': model_dict['resnet20'](num_classes=10).state_dict(), 'kdzoo': resume},
               files / 'resnet20_last.pth')
    paths['a run of another architecture'] = files / 'resnet20_last.pth'
    torch.save({'model': model_dict['resnet8'](num_classes=10).state_dict(),
                'kdzoo': dict(resume, objective={'embed.weight': torch.zeros(2, 2)})}, files / 'resnet8_last.pth')
    paths['a run of another method'] = files / 'resnet8_last.pth'
    return root, teacher, paths


DIGITS = ['--dataset', 'digits', '--epochs', '1']
TOOLS = {
    'train_student.py --path_t': (train_student.main, ['--path_t', '{bad}', '--model_t', 'resnet8', '--model_s',
                                                       'resnet8', *DIGITS, '--save_root', '{root}/save']),
    'train_student.py --resume': (train_student.main, ['--path_t', '{teacher}', '--model_s', 'resnet8', *DIGITS,
                                                       '--save_root', '{root}/save', '--resume', '{bad}']),
    'train_teacher.py --resume': (train_teacher.main, ['--model', 'resnet8', *DIGITS, '--trial', '7',
                                                       '--save_root', '{root}/save', '--resume', '{bad}']),
    'train_online_mcl.py --resume': (train_online_mcl.main, ['--arch', 'lmcl_resnet32_cifar', *DIGITS, '--batch_size',
                                                             '16', '--save_root', '{root}/save', '--resume', '{bad}']),
    'tools/eval.py --path': (eval_tool.main, ['--path', '{bad}', '--model', 'resnet8', '--dataset', 'digits']),
    'tools/nd_centers.py --path_t': (nd_centers.main, ['--path_t', '{bad}', '--model_t', 'resnet8', '--dataset',
                                                       'digits', '--out', '{root}/centers.json']),
}
KINDS = ['random bytes (KeyError)', 'random bytes (IndexError)', 'random bytes (MemoryError)',
         'random bytes (OverflowError)', 'random bytes', 'truncated', 'empty', 'JSON', 'a directory',
         'an optimiser state', 'another architecture']
RESUME_KINDS = ['a run of another architecture', 'a run of another method']  # only --resume reads them


def run_tool(main, argv, capsys):
    """(exit status, stderr lines, warnings) of ``main`` run as its command line runs it."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with pytest.raises(SystemExit) as stop:
            run_cli(main, argv)
    return stop.value.code, capsys.readouterr().err.strip().splitlines(), [str(w.message) for w in caught]


def folders(root):
    return sorted(folder for folder, _, _ in os.walk(root))


@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_every_bad_checkpoint_is_one_line(tool, bad, capsys):
    root, teacher, paths = bad
    main, template = TOOLS[tool]
    for kind in KINDS + (RESUME_KINDS if '--resume' in tool else []):
        argv = [a.format(bad=paths[kind], root=root, teacher=teacher) for a in template]
        before, tree = snapshot(root), folders(root)
        status, err, caught = run_tool(main, argv, capsys)
        assert status == 2, (kind, status, err)
        assert len(err) == 1 and err[0].startswith('error: ') and str(paths[kind]) in err[0], (kind, err)
        assert not caught, (kind, caught)
        assert snapshot(root) == before, kind  # no file written, changed or removed
        assert folders(root) == tree, kind  # nor a folder made (a --resume of another architecture made them)


def test_report_plots_into_a_file_is_one_line(tmp_path, capsys):
    from test_report import student_run
    root = str(tmp_path / 'save')
    student_run(root, [50.0, 60.0], '--distill', 'kd')
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    for target in (blocker, blocker / 'plots'):
        before = snapshot(tmp_path)
        status, err, _ = run_tool(report.main, ['--save_root', root, '--plots', str(target)], capsys)
        assert status == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: cannot write the plots into '{target}'") and '--plots' in err[0], err
        assert snapshot(tmp_path) == before
