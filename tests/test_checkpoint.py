"""Checkpoint files: atomic writes, clear errors, and weights in the other repos' formats."""
import argparse
import os

import numpy as np
import pytest
import torch

from helper.checkpoint import atomic_save, load_checkpoint
from models.weights import load_weights
from helper.errors import CheckpointError
from models import model_dict
from models.registry import model_name_from_path


def test_atomic_save_leaves_the_old_file_when_the_write_crashes(tmp_path, monkeypatch):
    path = tmp_path / 'ckpt.pth'
    atomic_save({'epoch': 1}, path)
    real_save = torch.save

    def crash_midway(obj, f):
        real_save({'epoch': 2, 'big': torch.zeros(1000)}, f)
        f.truncate(100)
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', crash_midway)
    with pytest.raises(OSError):
        atomic_save({'epoch': 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {'epoch': 1}
    assert os.listdir(tmp_path) == ['ckpt.pth']  # no temporary file left behind


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all', 'truncated'])
def test_broken_files_give_one_clear_error(tmp_path, content):
    path = tmp_path / 'broken.pth'
    if content == 'truncated':
        atomic_save({'model': model_dict['resnet8']().state_dict()}, path)
        content = path.read_bytes()[:3000]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match='is corrupt or truncated'):
        load_checkpoint(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint(str(tmp_path / 'nope.pth'), '--path_t')


def test_a_folder_is_named_as_one(tmp_path):
    atomic_save({'epoch': 1}, tmp_path / 'resnet8_best.pth')
    with pytest.raises(CheckpointError, match=r"--path '.*' is a directory holding resnet8_best.pth; pass the "
                                              r"checkpoint file itself"):
        load_checkpoint(str(tmp_path), '--path')


def reference_outputs(model):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    return x, model.eval()(x)


@pytest.mark.parametrize('fmt', ['repdistiller_best', 'repdistiller_last', 'simkd', 'mdistiller_student',
                                 'mdistiller_distiller', 'dataparallel', 'numpy_scalars', 'bare'])
def test_weights_load_from_other_repos_formats(tmp_path, fmt):
    source = model_dict['resnet8x4'](num_classes=100)
    state = source.state_dict()
    checkpoint = {
        'repdistiller_best': {'epoch': 240, 'model': state, 'best_acc': torch.tensor(72.5), 'optimizer': {}},
        'repdistiller_last': {'opt': argparse.Namespace(model='resnet8x4', epochs=240), 'model': state},
        'simkd': {'epoch': 240, 'best_acc': 78.0, 'model': state, 'proj': {'w': torch.zeros(2)}},
        'mdistiller_student': {'model': state},
        'mdistiller_distiller': {'model': {'module.student.' + k: v for k, v in state.items()}, 'epoch': 3},
        'dataparallel': {'model_state_dict': {'module.' + k: v for k, v in state.items()}},
        'numpy_scalars': {'model': state, 'best_acc': np.float64(71.2)},
        'bare': state,
    }[fmt]
    path = tmp_path / 'teacher.pth'
    torch.save(checkpoint, path)
    x, expected = reference_outputs(source)
    target = model_dict['resnet8x4'](num_classes=100)
    load_weights(target, str(path), 'resnet8x4')
    assert torch.equal(target.eval()(x), expected)


@pytest.mark.parametrize('arch,theirs,ours', [('wrn_40_2', 'bn.', 'bn1.'), ('ShuffleV1', 'fc.', 'linear.')])
def test_nd_repo_layer_names_are_mapped(tmp_path, arch, theirs, ours):
    source = model_dict[arch](num_classes=100)
    state = {(theirs + k[len(ours):] if k.startswith(ours) else k): v for k, v in source.state_dict().items()}
    assert state.keys() != source.state_dict().keys()
    torch.save({'model': state}, tmp_path / 'nd.pth')
    target = model_dict[arch](num_classes=100)
    load_weights(target, str(tmp_path / 'nd.pth'), arch)
    x, expected = reference_outputs(source)
    assert torch.equal(target.eval()(x), expected)


def test_checkpoint_of_another_architecture_is_named(tmp_path):
    torch.save({'model': model_dict['resnet20'](num_classes=100).state_dict()}, tmp_path / 't.pth')
    with pytest.raises(CheckpointError, match=r"does not fit resnet8 \(it looks like resnet20\)"):
        load_weights(model_dict['resnet8'](num_classes=100), str(tmp_path / 't.pth'), 'resnet8')


def test_checkpoint_for_another_class_count_is_named(tmp_path):
    torch.save({'model': model_dict['resnet8'](num_classes=10).state_dict()}, tmp_path / 't.pth')
    with pytest.raises(CheckpointError, match='is a resnet8 for 10 classes, but the data set has 100'):
        load_weights(model_dict['resnet8'](num_classes=100), str(tmp_path / 't.pth'), 'resnet8')


def test_non_classification_checkpoint(tmp_path):
    torch.save({'epoch': 3, 'note': 'nothing here'}, tmp_path / 't.pth')
    with pytest.raises(CheckpointError, match='holds no model weights'):
        load_weights(model_dict['resnet8'](num_classes=100), str(tmp_path / 't.pth'), 'resnet8')


@pytest.mark.parametrize('path,name', [
    ('./save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth', 'resnet32x4'),
    ('./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth', 'resnet32x4'),
    ('save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth', 'wrn_40_2'),
    ('save/teachers/models/MobileNetV2_1_0_vanilla_cifar100_trial_0/x.pth', 'MobileNetV2_1_0'),
    ('save/teachers/models/ShuffleV2_vanilla/x.pth', 'ShuffleV2'),
    ('save/students/models/S:resnet8x4_T:resnet32x4_cifar100_kd_r:0.1_a:0.9_b:0_1/resnet8x4_best.pth',
     'resnet8x4'),
    ('save/students/models/S~wrn_16_2_T~wrn_40_2_cifar100_kd_r~1_a~1_b~0_0/x.pth', 'wrn_16_2'),
    ('save/teachers/models/ResNet50_vanilla/ResNet50_best.pth', 'ResNet50'),
    ('somewhere/teacher.pth', None),
])
def test_architecture_from_path(path, name):
    assert model_name_from_path(path) == name
