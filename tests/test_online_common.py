"""Behaviour every online method (online/, train_online_mcl.py) must show, checked for each registered name:
the flags select it and keep its run folder's name, the loss falls over a few steps on tiny data, the optimiser
holds exactly the method's trainable parameters (with the momentum the run records), a run writes its files,
and an interrupted run resumes exactly."""
import collections
import json
import os

import pytest
import torch

import train_online_mcl
from dataset import build_data
from models.lmcl import HOMOGENEOUS
from online import ONLINE_METHODS, method_name, online_method

from conftest import killed_then_resumed, small_digits_fixture

# Each method once under its canonical name.
METHODS = sorted({cls.name for cls in ONLINE_METHODS.values()})
# The flags that select each method with small networks (a new method adds its line here). L-MCL's peers are
# ResNet-8s under a name of the test's own (``small_peers``); one virtual step per meta step, on the first
# step of every epoch.
SELECT = {
    'baseline': ['--arch', 'resnet8', '--baseline'],
    'lmcl': ['--arch', 'lmcl_resnet8_cifar', '--times', '1'],
    'mcl': ['--arch', 'lmcl_resnet8_cifar', '--no-meta'],
    'one': ['--arch', 'one_resnet8'],
    'uskd': ['--arch', 'resnet8', '--uskd'],
}
# The run folders of a default command (CIFAR-100, trial 0): what the save/ layout and the table scripts name.
FOLDERS = {
    'baseline': (['--arch', 'resnet32_cifar', '--baseline'], 'resnet32_baseline_cifar100_trial_0'),
    'lmcl': (['--arch', 'lmcl_resnet32_cifar'], 'lmcl_resnet32_cifar_x2_lmcl_cifar100_trial_0'),
    'mcl': (['--arch', 'lmcl_resnet32_cifar', '--no-meta'], 'lmcl_resnet32_cifar_x2_mcl_cifar100_trial_0'),
    'one': (['--arch', 'one_resnet32'], 'one_resnet32_x3_one_cifar100_trial_0'),
    'uskd': (['--arch', 'resnet32', '--uskd'], 'resnet32_uskd_cifar100_trial_0'),
}
# digits has 10 classes: L-MCL's class-balanced batches hold at most 20 images.
TINY = ['--dataset', 'digits', '--batch_size', '20', '--deterministic', '--precision', 'fp32']


@pytest.fixture(autouse=True)
def small_peers(monkeypatch):
    """An L-MCL name for two ResNet-8 peers (the repo's smallest are ResNet-32s, slow on a CPU)."""
    monkeypatch.setitem(HOMOGENEOUS, 'lmcl_resnet8_cifar', 'resnet8')


def parse(name, *extra):
    return train_online_mcl.parse_args([*SELECT[name], *TINY, *extra])


@pytest.mark.parametrize('name', METHODS)
def test_flags_select_the_method_and_its_run_folder_keeps_its_name(name, tmp_path):
    args = parse(name, '--save_root', str(tmp_path))
    assert method_name(args) == name and online_method(args) is ONLINE_METHODS[name]
    argv, folder = FOLDERS[name]
    args = train_online_mcl.parse_args([*argv, '--save_root', str(tmp_path)])
    files = online_method(args).run_files(args)
    assert files.folder == os.path.join(str(tmp_path), 'online', 'models', folder)
    assert args.run_defaults['arch'] == args.arch and args.one == (name == 'one')


@pytest.mark.parametrize('name', METHODS)
def test_steps_lower_the_loss_and_the_optimiser_holds_exactly_the_trainable_parameters(name):
    args = parse(name)
    method_cls = ONLINE_METHODS[name]
    data = build_data('digits', None, args.batch_size, 'cpu', seed=0)
    method_cls.prepare_data(args, data)
    torch.manual_seed(0)
    method = method_cls.build(args, data.num_classes)
    optimizer = method.optimizer(args)

    expected = {id(p) for m in method.trainable_modules() for p in m.parameters() if p.requires_grad}
    held = {id(p) for group in optimizer.param_groups for p in group['params']}
    assert held == expected and len(held) == sum(len(group['params']) for group in optimizer.param_groups)
    assert {id(p) for p in method.model.parameters()} <= held
    # every trainable parameter of the method is updated by exactly one optimiser: the run's, or one the method
    # keeps for itself (L-MCL's meta network)
    own = [value for value in vars(method).values() if isinstance(value, torch.optim.Optimizer)]
    counts = collections.Counter(id(p) for opt in (optimizer, *own) for group in opt.param_groups
                                 for p in group['params'])
    assert set(counts) == {id(p) for p in method.parameters() if p.requires_grad} and set(counts.values()) == {1}
    # what metrics.json records is what runs: the method's declared momentum (L-MCL's Nesterov SGD) or the flag's
    assert all(group['nesterov'] == args.nesterov for group in optimizer.param_groups)
    assert args.nesterov == (method_cls.nesterov or '--nesterov' in SELECT[name])

    data.train.set_epoch(1)
    batch = next(iter(data.train))
    method.train()
    images = batch.images.clone()
    losses = []
    for step in range(1, 7):  # the same batch again and again: the total loss must come down
        logits, terms = method.step(batch, epoch=1)
        total = sum(terms.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        method.after_step(batch, 1, step, args.learning_rate)
        losses.append(float(total.detach()))
    assert logits.shape == (batch.targets.size(0), data.num_classes)
    assert all(torch.is_tensor(v) and v.dim() == 0 for v in terms.values())
    assert losses[-1] < 0.9 * losses[0], losses
    assert torch.equal(batch.images, images)  # a method never writes into the batch


small_digits = small_digits_fixture(100, 40)


@pytest.mark.slow
@pytest.mark.parametrize('name', METHODS)
def test_run_writes_its_files_and_an_interrupted_run_resumes_exactly(name, tmp_path, small_digits, monkeypatch):
    def run(root, *extra):
        return train_online_mcl.main([*SELECT[name], *TINY, '--epochs', '2', '--save_root', str(root), *extra])

    whole = run(tmp_path / 'whole')
    args = parse(name, '--epochs', '2', '--save_root', str(tmp_path / 'whole'))
    files = online_method(args).run_files(args)
    metrics = json.load(open(files.metrics))
    assert metrics['status'] == 'finished' and metrics['epochs_done'] == 2
    assert [r['epoch'] for r in metrics['history']] == [1, 2]
    assert {f'train_{term}' for term in ('loss', 'top1')} <= set(whole['history'][-1])
    for path in (files.last, files.best, files.log):
        assert os.path.isfile(path), path
    # the checkpoints' model is the method's model (every network it trains), and loads into a fresh build
    last = torch.load(files.last, weights_only=True)
    fresh = ONLINE_METHODS[name].build(args, 10)
    fresh.model.load_state_dict(last['model'], strict=True)
    assert set(last['kdzoo']['objective']) == set(fresh.resume_state())

    parted = killed_then_resumed(monkeypatch, run, tmp_path / 'parted')
    assert parted['history'][-1]['train_loss'] == whole['history'][-1]['train_loss']
    a = torch.load(files.last, weights_only=True)
    b = torch.load(files.last.replace(str(tmp_path / 'whole'), str(tmp_path / 'parted')), weights_only=True)
    assert_equal(a['model'], b['model'])
    assert_equal(a['kdzoo']['objective'], b['kdzoo']['objective'])  # the method's own modules, L-MCL's meta optimiser


def assert_equal(a, b, where='checkpoint'):
    """Nested dicts and lists of tensors and plain values, equal exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_equal(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f'{where}[{i}]')
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where
