"""Checkpoints of the seeds' repos wherever kdzoo reads one: mdistiller's whole-distiller files (teacher,
eval, resume) and the SimKD repo's ImageNet ShuffleNetV2 with its conv5."""
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import train_teacher
from models.weights import load_weights
from helper.errors import CheckpointError, KDZooError
from models import imagenet_model_dict, model_dict
from tools import eval as eval_tool
from train_student import load_teacher


class MdistillerDistiller(nn.Module):
    """The shape of mdistiller's ``Distiller``: ``student`` and ``teacher`` attributes plus the method's
    own modules (here a ReviewKD-like ``abfs`` list)."""

    def __init__(self, student, teacher):
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.abfs = nn.ModuleList([nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)])


def save_like_mdistiller(folder, student, teacher, epoch, optimizer_state=None):
    """What mdistiller's BaseTrainer.train_epoch writes: the DataParallel-wrapped distiller's state dict
    with epoch, optimizer and best_acc under ``latest``, ``best`` and ``epoch_<N>`` (no extension, written
    through an open file), and the bare student under ``student_latest`` / ``student_best``."""
    distiller = nn.DataParallel(MdistillerDistiller(student, teacher))  # keys: module.student.*, ...
    if optimizer_state is None:
        optimizer_state = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9).state_dict()
    state = {'epoch': epoch, 'model': distiller.state_dict(), 'optimizer': optimizer_state,
             'best_acc': torch.tensor(71.25)}
    os.makedirs(folder, exist_ok=True)
    for name in ('latest', 'best', f'epoch_{epoch}'):
        with open(os.path.join(folder, name), 'wb') as f:
            torch.save(state, f)
    for name in ('student_latest', 'student_best'):
        with open(os.path.join(folder, name), 'wb') as f:
            torch.save({'model': distiller.module.student.state_dict()}, f)
    return state


def pair(arch='resnet8', num_classes=10):
    """A student and a teacher of the same architecture with different weights: loading the wrong half
    of a distiller file would still fit, so only the outputs tell the student was chosen."""
    torch.manual_seed(1)
    student = model_dict[arch](num_classes=num_classes).eval()
    torch.manual_seed(2)
    teacher = model_dict[arch](num_classes=num_classes).eval()
    return student, teacher


def test_distiller_file_keys_are_mdistillers(tmp_path):
    student, teacher = pair()
    state = save_like_mdistiller(tmp_path, student, teacher, epoch=3)
    keys = list(state['model'])
    assert 'module.student.conv1.weight' in keys and 'module.teacher.conv1.weight' in keys
    assert 'module.abfs.0.weight' in keys


@pytest.mark.parametrize('name', ['latest', 'best', 'epoch_3', 'student_best', 'student_latest'])
def test_every_mdistiller_file_loads_its_student(tmp_path, name):
    student, teacher = pair()
    save_like_mdistiller(tmp_path, student, teacher, epoch=3)
    x = torch.randn(2, 3, 32, 32)
    loaded = model_dict['resnet8'](num_classes=10)
    load_weights(loaded, str(tmp_path / name), 'resnet8')
    out = loaded.eval()(x)
    assert torch.equal(out, student(x))
    assert not torch.allclose(out, teacher(x))


def test_distiller_file_of_another_student_is_named(tmp_path):
    torch.manual_seed(0)
    save_like_mdistiller(tmp_path, model_dict['resnet8x4'](num_classes=100),
                         model_dict['resnet32x4'](num_classes=100), epoch=1)
    with pytest.raises(CheckpointError, match=r"does not fit resnet8 \(it looks like resnet8x4\)"):
        load_weights(model_dict['resnet8'](num_classes=100), str(tmp_path / 'best'), 'resnet8')


def test_distiller_file_as_teacher(tmp_path):
    student, teacher = pair()
    save_like_mdistiller(tmp_path, student, teacher, epoch=3)
    args = SimpleNamespace(model_t='resnet8', path_t=str(tmp_path / 'latest'), dataset='digits')
    loaded = load_teacher(args, 10, torch.device('cpu'), torch.contiguous_format)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), student(x))


def test_eval_reads_distiller_files_with_mdistillers_flags(tmp_path):
    student, teacher = pair()
    save_like_mdistiller(tmp_path, student, teacher, epoch=3)
    common = ['-m', 'resnet8', '-d', 'digits', '-bs', '128', '--precision', 'fp32']
    full = eval_tool.main([*common, '-c', str(tmp_path / 'best')])
    alone = eval_tool.main([*common, '-c', str(tmp_path / 'student_best')])
    assert full['model'] == 'resnet8' and full['dataset'] == 'digits'
    assert (full['top1'], full['top5'], full['loss']) == (alone['top1'], alone['top5'], alone['loss'])


def teacher_args(save_root, *extra, epochs=2):
    return ['--model', 'resnet8', '--dataset', 'digits', '--epochs', str(epochs), '--lr_decay_epochs', '1',
            '--deterministic', '--save_root', str(save_root), *extra]


@pytest.mark.slow
def test_resume_from_a_distiller_file_matches_a_native_resume(tmp_path, capsys):
    """Epoch 1 trained here, written out the way mdistiller would (its student, a teacher of the same
    architecture, SGD state), then continued: the weights equal those of kdzoo's own exact resume."""
    first = tmp_path / 'first'
    train_teacher.main(teacher_args(first, epochs=1))
    folder = first / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0'
    last = torch.load(folder / 'resnet8_last.pth', weights_only=True)

    native = tmp_path / 'native'
    train_teacher.main(teacher_args(native, '--resume', str(folder / 'resnet8_last.pth')))

    student = model_dict['resnet8'](num_classes=10)
    student.load_state_dict(last['model'])
    _, teacher = pair()
    save_like_mdistiller(tmp_path / 'mdistiller', student, teacher, epoch=1, optimizer_state=last['optimizer'])
    foreign = tmp_path / 'foreign'
    capsys.readouterr()
    state = train_teacher.main(teacher_args(foreign, '--seed', str(last['opt']['seed']),
                                            '--resume', str(tmp_path / 'mdistiller' / 'latest')))
    assert 'after epoch 1 (no kdzoo resume data): SGD momentum restored' in capsys.readouterr().out
    assert [r['epoch'] for r in state['history']] == [2]

    def weights(root):
        path = root / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0' / 'resnet8_last.pth'
        return torch.load(path, weights_only=True)['model']

    for key, value in weights(native).items():
        assert torch.equal(value, weights(foreign)[key]), key


def test_resume_from_student_weights_without_momentum(tmp_path, capsys):
    student, teacher = pair()
    save_like_mdistiller(tmp_path / 'run', student, teacher, epoch=1, optimizer_state={'bogus': 1})
    state = train_teacher.main(teacher_args(tmp_path, '--resume', str(tmp_path / 'run' / 'latest')))
    assert 'SGD momentum starts at zero' in capsys.readouterr().out
    assert [r['epoch'] for r in state['history']] == [2]


def test_resume_of_a_finished_foreign_run_is_one_line(tmp_path):
    student, teacher = pair()
    save_like_mdistiller(tmp_path / 'run', student, teacher, epoch=240)
    with pytest.raises(KDZooError, match=r"already finished 240 of 2 epochs"):
        train_teacher.main(teacher_args(tmp_path, '--resume', str(tmp_path / 'run' / 'latest')))


def test_resume_of_a_repdistiller_last_with_a_namespace_opt(tmp_path):
    """RepDistiller's <model>_last.pth holds ``opt`` as an argparse Namespace and no epoch: it continues
    from epoch 1 with its weights (the seed comes from the Namespace when it has one)."""
    import argparse
    student, _ = pair()
    path = tmp_path / 'resnet8_vanilla' / 'resnet8_last.pth'
    path.parent.mkdir()
    torch.save({'opt': argparse.Namespace(model='resnet8', seed=7), 'model': student.state_dict()}, path)
    state = train_teacher.main(teacher_args(tmp_path / 'save', '--resume', str(path), epochs=1))
    assert [r['epoch'] for r in state['history']] == [1]


# ------------------------------------------------------------------ the SimKD repo's ShuffleV2_Imagenet

def torchvision_shufflenet_v2_x1_0_keys():
    """Key names of torchvision's shufflenet_v2_x1_0 (the SimKD repo's copy, whose published weights and
    checkpoints keep ``conv5``), spelled out from its layout: stem, three stages of 4/8/4 units, conv5, fc."""
    bn = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
    keys = ['conv1.0.weight', *(f'conv1.1.{k}' for k in bn)]
    for stage, repeats in (('stage2', 4), ('stage3', 8), ('stage4', 4)):
        for unit in range(repeats):
            if unit == 0:  # the stride-2 unit has both branches
                keys += [f'{stage}.0.branch1.0.weight', *(f'{stage}.0.branch1.1.{k}' for k in bn),
                         f'{stage}.0.branch1.2.weight', *(f'{stage}.0.branch1.3.{k}' for k in bn)]
            for conv, norm in ((0, 1), (3, 4), (5, 6)):
                keys += [f'{stage}.{unit}.branch2.{conv}.weight', *(f'{stage}.{unit}.branch2.{norm}.{k}' for k in bn)]
    keys += ['conv5.0.weight', *(f'conv5.1.{k}' for k in bn), 'fc.weight', 'fc.bias']
    return keys


def test_simkd_shufflenet_imagenet_checkpoint_with_conv5_loads_strictly(tmp_path):
    torch.manual_seed(0)
    source = imagenet_model_dict['ShuffleV2_Imagenet'](num_classes=1000)
    state = source.state_dict()
    assert list(state) == torchvision_shufflenet_v2_x1_0_keys()
    assert state['conv5.0.weight'].shape == (1024, 464, 1, 1)
    # the SimKD repo's student checkpoint: epoch, model, best_acc (and proj for simkd), in an S:..._T:... folder
    folder = tmp_path / 'S:ShuffleV2_Imagenet_T:ResNet50_imagenet_kd_r:1_a:1_b:0_1'
    folder.mkdir()
    path = folder / 'ShuffleV2_Imagenet_best.pth'
    torch.save({'epoch': 120, 'model': state, 'best_acc': 69.1}, path)
    from models.registry import model_name_from_path
    assert model_name_from_path(str(path)) == 'ShuffleV2_Imagenet'
    target = imagenet_model_dict['ShuffleV2_Imagenet'](num_classes=1000)
    load_weights(target, str(path), 'ShuffleV2_Imagenet')
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(target.eval()(x), source.eval()(x))
