"""The parsed arguments stay as parsed: what a run finds while running (its seed, the teacher's hash and
top-1) lives in its RunRecord (helper/provenance.py), and the files record it under the keys they always had."""
import copy
import json
import os

import pytest
import torch

import train_student
import train_teacher
from conftest import small_digits_fixture
from engine.launch import launch
from helper.provenance import RunRecord, state_dict_sha256
from models import model_dict

small_digits = small_digits_fixture(128, 64)
TINY = ['--dataset', 'digits', '--epochs', '1', '--batch_size', '32', '--precision', 'fp32', '--num_workers', '0']


def run_unchanged(script, argv):
    """Parse ``argv`` as ``script`` does, run it, and check that the run wrote nothing into the namespace
    (a pack's members included: Namespaces compare by their values)."""
    args = script.parse_args(argv)
    parsed = copy.deepcopy(vars(args))
    state = launch(args, script.train)
    assert vars(args) == parsed
    return args, state


def recorded(folder, model):
    metrics = json.load(open(os.path.join(folder, 'metrics.json')))
    opt = torch.load(os.path.join(folder, f'{model}_last.pth'), weights_only=True)['opt']
    return metrics['args'], opt


def plain_keys(args, *found):
    """The keys today's files hold: the parsed arguments' plain values in their order, then what was found."""
    return [k for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None), list, tuple))
            ] + list(found)


def random_teacher(root):
    folder = root / 'resnet8_vanilla'
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    weights = model_dict['resnet8'](num_classes=10).state_dict()
    torch.save({'model': weights}, folder / 'resnet8_best.pth')
    return str(folder / 'resnet8_best.pth'), state_dict_sha256(weights)


def test_a_teacher_run_keeps_its_drawn_seed_out_of_args_and_resume_recovers_it(tmp_path, capsys):
    argv = ['--model', 'resnet8', *TINY, '--save_root', str(tmp_path)]
    args, _ = run_unchanged(train_teacher, argv)
    assert args.seed is None  # no --seed, no --deterministic: the run drew one
    folder = os.path.join(tmp_path, 'teachers', 'models', 'resnet8_vanilla_digits_trial_0')
    written, opt = recorded(folder, 'resnet8')
    seed = opt['seed']
    assert isinstance(seed, int) and written['seed'] == seed and f'seed {seed}' in capsys.readouterr().out
    assert list(written) == plain_keys(args) and list(opt) == list(vars(args))

    args, _ = run_unchanged(train_teacher, [*argv, '--epochs', '2', '--resume', 'auto'])
    assert args.seed is None and f'seed {seed}' in capsys.readouterr().out
    assert recorded(folder, 'resnet8')[1]['seed'] == seed  # the resumed run replays the first one's data order


def test_a_two_stage_student_run_records_the_teacher_without_writing_args(tmp_path):
    teacher, sha = random_teacher(tmp_path)
    argv = ['--path_t', teacher, '--model_s', 'resnet8', '--distill', 'fsp', '--init_epochs', '1', '--seed', '3',
            *TINY, '--save_root', str(tmp_path)]
    args, _ = run_unchanged(train_student, argv)
    assert not hasattr(args, 'teacher_sha256') and not hasattr(args, 'teacher_top1')
    folder, = [os.path.join(tmp_path, 'students', 'models', name)
               for name in os.listdir(os.path.join(tmp_path, 'students', 'models'))]
    written, opt = recorded(folder, 'resnet8')
    assert list(written) == plain_keys(args, 'teacher_sha256', 'teacher_top1')
    assert list(opt) == [*vars(args), 'teacher_sha256', 'teacher_top1']
    for values in (written, opt):
        assert (values['seed'], values['teacher_sha256']) == (3, sha) and 0 <= values['teacher_top1'] <= 100
    init = torch.load(os.path.join(folder, 'resnet8_init.pth'), weights_only=True)['opt']
    assert init['teacher_sha256'] == sha  # the init stage's checkpoint records the same run


def test_a_pack_writes_into_neither_its_namespace_nor_its_members(tmp_path):
    teacher, sha = random_teacher(tmp_path)
    argv = ['--path_t', teacher, '--model_s', 'resnet8', '--distill', 'kd,dkd', '--skip-validation', *TINY,
            '--save_root', str(tmp_path)]
    pack, _ = run_unchanged(train_student, argv)
    assert pack.seed is None and all(member.seed is None for member in pack.members)
    folders = sorted(os.listdir(os.path.join(tmp_path, 'students', 'models')))
    seeds = set()
    for member, name in zip(sorted(pack.members, key=lambda m: m.distill), folders):
        written, opt = recorded(os.path.join(tmp_path, 'students', 'models', name), 'resnet8')
        assert list(written) == plain_keys(member, 'teacher_sha256')  # --skip-validation: no top-1
        assert written['teacher_sha256'] == sha and opt['seed'] == written['seed']
        seeds.add(written['seed'])
    assert len(seeds) == 1  # one data order for the pack


def test_the_record_merges_into_the_arguments_under_their_keys():
    from argparse import Namespace
    args = Namespace(model='resnet8', seed=None, trial='0')
    assert list(RunRecord(5).written(args).items()) == [('model', 'resnet8'), ('seed', 5), ('trial', '0')]
    written = RunRecord(5, 'ab', 71.5).written(args)
    assert list(written) == ['model', 'seed', 'trial', 'teacher_sha256', 'teacher_top1']
    assert vars(args) == dict(model='resnet8', seed=None, trial='0')
    with pytest.raises(AttributeError):
        RunRecord(5).seed = 6  # built once


@pytest.mark.parametrize('selection', [['--arch', 'resnet8', '--baseline'], ['--arch', 'one_resnet8']],
                         ids=['baseline', 'one'])
def test_an_online_run_keeps_its_seed_out_of_args(tmp_path, capsys, selection):
    """train_online_mcl.py runs on the same skeleton: the drawn seed is printed, checkpointed and recorded, and
    the namespace (its nesterov, settled once while parsing) is left as parsed."""
    import glob
    import train_online_mcl
    argv = [*selection, *TINY, '--save_root', str(tmp_path)]
    args, _ = run_unchanged(train_online_mcl, argv)
    assert args.seed is None
    folder = train_online_mcl.run_files(args).folder
    metrics = json.load(open(os.path.join(folder, 'metrics.json')))
    opt = torch.load(glob.glob(os.path.join(folder, '*_last.pth'))[0], weights_only=True)['opt']
    seed = opt['seed']
    assert isinstance(seed, int) and metrics['args']['seed'] == seed and f'seed {seed}' in capsys.readouterr().out
    assert list(opt) == list(vars(args))
