"""Behaviour every --distill method must show, checked for each registered name:
the loss falls, the teacher never changes, the optimiser holds exactly the student and the method's
trainable modules, a one-epoch run writes its files, and an interrupted run resumes exactly."""
import json
import os

import pytest
import torch

import train_student
from dataset import build_data
from distiller_zoo import DISTILLERS
from engine.setup import sgd

from conftest import first_digits, run_script, shared_digits_teacher

# Each method once under its canonical name (aliases such as NORM or nd_kd select the same class).
METHODS = sorted({cls.name for cls in DISTILLERS.values()})
# Small-data settings that every method accepts (CRD's negatives must be fewer than the images).
SMALL = ['--nce_k', '64', '--init_epochs', '1', '--batch_size', '32']
# FT's paraphraser has no BN: on the barely trained digits teacher (feature maps up to ~50) its init
# stage diverges at RepDistiller's 0.01 and needs a smaller lr.
# SKD's direction term reads L2-normalised logits, so its gradient grows as 1/|z|: a fresh student's small,
# nearly collinear logits are thrown at 0.05 (with momentum) onto the term's scale-invariant plateau.
# WSLD's value is a soft cross-entropy, T^2 * 2.25 * w * (the teacher's entropy + KL), whose weight w (the
# student's CE over the teacher's, without gradient) rises as the student follows this barely trained,
# near-uniform teacher at T 4: at T 1 its entropy is a smaller floor and the CE can bring w down in 12 steps.
EXTRA = {'factor': ['--learning_rate', '0.001'],
         # TTM's official weight, -b 45, makes twelve steps on one batch at the digits lr 0.05 overshoot
         'ttm': ['--learning_rate', '0.01'], 'ttm++': ['--learning_rate', '0.01'],
         'skd': ['--learning_rate', '0.002'], 'skd++': ['--learning_rate', '0.002'],
         'wsld': ['--wsld_T', '1'], 'wsld++': ['--wsld_T', '1'],
         # FCFD samples 2 of resnet8's 4 mixed paths a step, and which 2 moves the total by up to 2x: all 4 each
         # step make the totals of the steps comparable
         'fcfd': ['--fcfd_paths', '4']}


@pytest.fixture
def small_digits(monkeypatch):
    """Whole runs train on the first 192 training and 64 test digits (six batches of 32): what they check is
    that each method runs, writes and resumes, not what it learns, and on the whole digits they were a third
    of CI's time. The teacher and the loss-falls test keep the whole data."""
    first_digits(monkeypatch, 192, 64)


@pytest.fixture(scope='module')
def teacher_path(tmp_path_factory, digits_once):
    """A resnet20 digits teacher, trained for 2 epochs (its channels match resnet8's, so FSP works)."""
    return shared_digits_teacher(tmp_path_factory, digits_once, 'resnet20', '--epochs', '2')


def student_argv(name, teacher_path, root, *extra):
    return ['--path_t', teacher_path, '--distill', name, '--model_s', 'resnet8', '--dataset', 'digits',
            '--deterministic', '--save_root', str(root), *SMALL, *EXTRA.get(name, []), *extra]


def build(name, teacher_path, root, *extra):
    args = train_student.parse_args(student_argv(name, teacher_path, root, '--epochs', '1', *extra))
    args.seed = 0
    data = build_data('digits', '', args.batch_size, 'cpu', seed=0,
                      **DISTILLERS[name].data_options(args))
    torch.manual_seed(0)  # the student's and the method's first weights, whichever tests ran before in this process
    return args, data, train_student.build_objective(args, data, torch.device('cpu'), 'fp32')


@pytest.mark.parametrize('name', METHODS)
def test_training_steps_lower_the_loss_and_leave_the_teacher_alone(name, teacher_path, tmp_path):
    # a batch of 16: the twelve steps (teacher pass included, redone every step as in training) are the cost
    args, data, objective = build(name, teacher_path, tmp_path, '--batch_size', '16')
    teacher_before = {k: v.clone() for k, v in objective.teacher.state_dict().items()}
    optimizer = sgd(objective.trainable_modules(), args)

    # the optimiser holds exactly the student's and the method's trainable parameters
    expected = {id(p) for m in objective.trainable_modules() for p in m.parameters() if p.requires_grad}
    held = {id(p) for group in optimizer.param_groups for p in group['params']}
    assert held == expected
    assert {id(p) for p in objective.model.parameters()} <= held
    assert not {id(p) for p in objective.teacher.parameters()} & held

    data.train.set_epoch(1)
    batch = next(iter(data.train))
    objective.train()
    losses = []
    for _ in range(12):  # the same batch again and again: the total loss must come down
        total = sum(objective.step(batch, epoch=30).losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.9 * losses[0], losses
    assert not objective.teacher.training
    for key, value in objective.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key


@pytest.mark.slow
@pytest.mark.parametrize('name', METHODS)
def test_one_epoch_run_writes_checkpoint_and_metrics(name, teacher_path, tmp_path, small_digits):
    state = train_student.main(student_argv(name, teacher_path, tmp_path, '--epochs', '1'))
    assert state['epoch'] == 1
    runs = os.listdir(tmp_path / 'students' / 'models')
    assert len(runs) == 1 and runs[0].startswith(f'S:resnet8_T:resnet20_digits_{name}_r:')
    folder = tmp_path / 'students' / 'models' / runs[0]
    best = torch.load(folder / 'resnet8_best.pth', weights_only=True)
    assert {'model', 'epoch', 'best_acc'} <= set(best)
    metrics = json.load(open(folder / 'metrics.json'))
    assert metrics['status'] == 'finished' and metrics['args']['distill'] == name
    assert metrics['args']['teacher_top1'] > 0


@pytest.mark.slow
@pytest.mark.parametrize('name', ['kd', 'crd', 'factor'])
def test_interrupted_student_run_resumes_exactly(name, teacher_path, tmp_path, monkeypatch, small_digits):
    from engine.loop import Trainer
    whole = train_student.main(student_argv(name, teacher_path, tmp_path / 'whole', '--epochs', '2'))
    original_save = Trainer.save

    def crash_after_first_main_epoch(self, epoch, top1, is_best):
        original_save(self, epoch, top1, is_best)
        if self.stage == 'main' and epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, 'save', crash_after_first_main_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_student.main(student_argv(name, teacher_path, tmp_path / 'parted', '--epochs', '2'))
    monkeypatch.setattr(Trainer, 'save', original_save)
    parted = train_student.main(student_argv(name, teacher_path, tmp_path / 'parted', '--epochs', '2',
                                             '--resume', 'auto'))
    assert parted['history'][-1]['train_loss'] == whole['history'][-1]['train_loss']

    def last_checkpoint(root):
        folder = root / 'students' / 'models'
        return torch.load(folder / os.listdir(folder)[0] / 'resnet8_last.pth', weights_only=True)
    a, b = last_checkpoint(tmp_path / 'whole'), last_checkpoint(tmp_path / 'parted')
    for key in a['model']:
        assert torch.equal(a['model'][key], b['model'][key]), key
    for key in a['kdzoo']['objective']:  # method state too: CRD's memory banks, FT's translator
        assert torch.equal(a['kdzoo']['objective'][key], b['kdzoo']['objective'][key]), key


@pytest.mark.slow
def test_cli_run_on_fake_cifar(teacher_path, tmp_path, fake_cifar):
    cifar_teacher = tmp_path / 'save' / 'teachers' / 'models' / 'resnet8_vanilla'
    result = run_script('train_teacher.py', '--model', 'resnet8', '--epochs', '1', '--data_folder', fake_cifar,
                        '--save_root', tmp_path / 'save', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_script('train_student.py', '--path_t', cifar_teacher / 'resnet8_best.pth', '--distill', 'crd',
                        '--model_s', 'resnet8', '-a', '0', '-b', '0.8', '--nce_k', '64', '--epochs', '1',
                        '--data_folder', fake_cifar, '--save_root', tmp_path / 'save', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'teacher resnet8: top-1' in result.stdout and 'student resnet8: last top-1' in result.stdout
    folder = tmp_path / 'save' / 'students' / 'models' / 'S:resnet8_T:resnet8_cifar100_crd_r:1_a:0_b:0.8_nce_k:64_0'
    assert (folder / 'resnet8_best.pth').exists() and (folder / 'metrics.json').exists()
