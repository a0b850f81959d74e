"""train_teacher.py end to end on the built-in digits data: training, outputs, resume, NaN stop."""
import json
import os

import pytest
import torch

import train_teacher
from helper.errors import NonFiniteLossError
from engine.loop import Trainer
from models import model_dict

from conftest import first_digits, run_script


def teacher_args(save_root, *extra, epochs=4):
    return ['--model', 'resnet8', '--dataset', 'digits', '--epochs', str(epochs), '--lr_decay_epochs', '3',
            '--save_freq', '2', '--deterministic', '--save_root', str(save_root), *extra]


def run_folder(save_root):
    return os.path.join(save_root, 'teachers', 'models', 'resnet8_vanilla_digits_trial_0')


@pytest.mark.slow
def test_teacher_training_learns_and_writes_repdistiller_files(tmp_path):
    state = train_teacher.main(teacher_args(tmp_path))
    history = state['history']
    assert [r['epoch'] for r in history] == [1, 2, 3, 4]
    assert history[-1]['train_loss'] < 0.75 * history[0]['train_loss']
    assert history[-1]['train_top1'] > 2 * history[0]['train_top1']
    assert state['best_acc'] > 30.0  # ten classes: chance is 10%
    assert [r['lr'] for r in history] == pytest.approx([0.05, 0.05, 0.05, 0.005])

    folder = run_folder(tmp_path)
    best = torch.load(os.path.join(folder, 'resnet8_best.pth'), weights_only=True)
    assert {'model', 'epoch', 'best_acc', 'optimizer'} <= set(best)
    assert best['best_acc'] == pytest.approx(state['best_acc'])
    periodic = torch.load(os.path.join(folder, 'ckpt_epoch_2.pth'), weights_only=True)
    assert periodic['epoch'] == 2 and 'accuracy' in periodic
    assert os.path.exists(os.path.join(folder, 'ckpt_epoch_4.pth'))
    assert not os.path.exists(os.path.join(folder, 'ckpt_epoch_3.pth'))
    last = torch.load(os.path.join(folder, 'resnet8_last.pth'), weights_only=True)
    assert last['epoch'] == 4 and last['opt']['model'] == 'resnet8'
    fresh = model_dict['resnet8'](num_classes=10)
    fresh.load_state_dict(last['model'], strict=True)

    metrics = json.load(open(os.path.join(folder, 'metrics.json')))
    assert metrics['status'] == 'finished'
    assert metrics['last']['top1'] == pytest.approx(history[-1]['val_top1'])
    assert metrics['best']['top1'] == pytest.approx(state['best_acc'])
    assert metrics['num_params'] == sum(p.numel() for p in fresh.parameters())
    assert metrics['wall_time_s'] > 0 and metrics['args']['learning_rate'] == 0.05
    tb = os.path.join(tmp_path, 'teachers', 'tensorboard', 'resnet8_vanilla_digits_trial_0')
    assert any(name.startswith('events.out.tfevents') for name in os.listdir(tb))


@pytest.mark.slow
def test_interrupted_run_resumes_to_bitwise_identical_weights(tmp_path, monkeypatch):
    first_digits(monkeypatch, 192, 64)  # runs compared with each other: a part of the digits does
    whole = tmp_path / 'whole'
    train_teacher.main(teacher_args(whole, epochs=4))

    parted = tmp_path / 'parted'
    original_save = Trainer.save

    def save_then_crash(self, epoch, top1, is_best):
        original_save(self, epoch, top1, is_best)
        if epoch == 2:
            raise KeyboardInterrupt  # as if the job were killed after epoch 2
    monkeypatch.setattr(Trainer, 'save', save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_teacher.main(teacher_args(parted, epochs=4))
    monkeypatch.setattr(Trainer, 'save', original_save)
    state = train_teacher.main(teacher_args(parted, '--resume', 'auto', epochs=4))

    assert [r['epoch'] for r in state['history']] == [1, 2, 3, 4]
    a = torch.load(os.path.join(run_folder(whole), 'resnet8_last.pth'), weights_only=True)
    b = torch.load(os.path.join(run_folder(parted), 'resnet8_last.pth'), weights_only=True)
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    assert a['best_acc'] == b['best_acc']


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    train_teacher.main(teacher_args(tmp_path, epochs=1))
    last = os.path.join(run_folder(tmp_path), 'resnet8_last.pth')
    before = open(last, 'rb').read()
    with pytest.raises(NonFiniteLossError, match=r'NaN or infinite at epoch 2, step \d+'):
        train_teacher.main(teacher_args(tmp_path, '--resume', 'auto', '--learning_rate', '1e12', epochs=3))
    assert open(last, 'rb').read() == before
    metrics = json.load(open(os.path.join(run_folder(tmp_path), 'metrics.json')))
    assert metrics['status'].startswith('stopped: non-finite loss at epoch 2')


@pytest.mark.slow
def test_nan_stop_from_the_command_line_is_one_line(tmp_path):
    result = run_script('train_teacher.py', *teacher_args(tmp_path, '--learning_rate', '1e12', epochs=1),
                        cwd=tmp_path)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: the loss became NaN or infinite at epoch 1')
    assert 'no epoch had finished' in result.stderr
