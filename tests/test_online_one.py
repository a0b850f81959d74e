"""ONE (On-the-fly Native Ensemble): the ramp-up and the official KL against hand-computed values, the
multi-branch network (shared low layers, fresh branch copies, the gate's ensemble) for CIFAR and ImageNet
ResNets, the step's losses against a formula, the official recipe, one-line errors, and a tiny run of
train_online_mcl.py with its exported branch, evaluation and exact resume."""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_online_mcl
import train_student
from helper.errors import KDZooError
from models import imagenet_model_dict, model_dict
from helper.recipe import schedule_note
from online.one import ONE as ONEObjective, ONENet, one_kl, sigmoid_rampup
from tools import eval as eval_tool

from conftest import killed_then_resumed, small_digits_fixture


# ---- the ramp-up and the KL -------------------------------------------------------------------------------

def test_sigmoid_rampup_hand_values():
    assert sigmoid_rampup(0, 80) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(40, 80) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(80, 80) == sigmoid_rampup(300, 80) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0


def test_one_kl_hand_example_with_the_official_epsilon():
    # T = 3, one sample, two classes: teacher (3, 0) -> p = softmax((1, 0)), student (0, 0) -> q = (1/2, 1/2)
    p0 = math.e / (math.e + 1)
    p = [p0 + 1e-7, 1 - p0 + 1e-7]
    want = 9 * sum(pi * (math.log(pi) - math.log(0.5)) for pi in p)
    student = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.tensor([[3.0, 0.0]], requires_grad=True)
    loss = one_kl(student, teacher)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    assert teacher.grad is None and student.grad is not None  # the ensemble is the target, detached
    # batch mean: two identical rows give the same value
    assert one_kl(torch.zeros(2, 2), torch.tensor([[3.0, 0.0]] * 2)).item() == pytest.approx(want, rel=1e-6)


# ---- the network ---------------------------------------------------------------------------------------------

def test_cifar_resnet_branches_after_layer2_with_fresh_copies():
    torch.manual_seed(0)
    net = ONENet('resnet32', 100, 'cifar100', branches=3)
    assert net.shared_index == 2 and len(net.branches) == 2
    assert net.gate[0].in_features == 32 and net.gate[0].out_features == 3  # layer2's channels -> 3 branches
    assert isinstance(net.gate[1], torch.nn.BatchNorm1d)
    backbone = {id(p) for p in net.backbone.parameters()}
    for branch in net.branches:
        assert not {id(p) for p in branch.parameters()} & backbone
        # the same shapes as the backbone's layer3 and classifier, other values
        mine = dict(branch.stages[0].named_parameters())
        theirs = dict(net.backbone.layer3.named_parameters())
        assert mine.keys() == theirs.keys()
        assert not torch.equal(mine['0.conv1.weight'], theirs['0.conv1.weight'])
        assert branch.classifier.weight.shape == net.backbone.fc.weight.shape
    # branch 0 is the plain zoo model: its state dict loads into resnet32 strictly
    model_dict['resnet32'](num_classes=100).load_state_dict(net.backbone.state_dict(), strict=True)


def test_forward_is_the_gate_weighted_sum_of_the_branches():
    torch.manual_seed(1)
    net = ONENet('resnet8', 10, 'digits', branches=3).eval()
    with torch.no_grad():
        net.gate[1].running_mean.uniform_(-0.5, 0.5)  # a gate that is not uniform
        x = torch.randn(4, 3, 32, 32)
        logits, ensemble = net(x)
        feats, own = net.backbone(x, is_feat=True)
        torch.testing.assert_close(logits[0], own)
        torch.testing.assert_close(logits[1], net.branches[0](feats[2])[1])
        pooled = feats[2].mean(dim=(2, 3))
        weights = F.softmax(F.relu(net.gate[1](net.gate[0](pooled))), dim=1)
        want = sum(weights[:, i, None] * logits[i] for i in range(3))
    torch.testing.assert_close(ensemble, want)
    assert not torch.allclose(weights, torch.full_like(weights, 1 / 3))


def test_imagenet_resnet18_branches_own_the_last_two_stages():
    net = ONENet('ResNet18', 5, 'imagenet', branches=3)
    assert net.shared_index == 2 and net.gate[0].in_features == 128
    assert all(len(branch.stages) == 2 for branch in net.branches)  # layer3 and layer4 copies
    logits, ensemble = net.eval()(torch.randn(2, 3, 64, 64))
    assert [tuple(z.shape) for z in logits] == [(2, 5)] * 3 and ensemble.shape == (2, 5)
    imagenet_model_dict['ResNet18'](num_classes=5).load_state_dict(net.backbone.state_dict(), strict=True)
    assert ONENet('ResNet18', 5, 'imagenet', branch_stages=1).shared_index == 3


def test_step_losses_against_the_formula():
    torch.manual_seed(2)
    args = train_online_mcl.parse_args(['--arch', 'one_resnet8', '--dataset', 'digits'])
    objective = ONEObjective(ONENet('resnet8', 10, 'digits', 3), args).eval()
    images, targets = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5])
    batch = type('Batch', (), dict(images=images, targets=targets))
    with torch.no_grad():
        out = objective.step(batch, epoch=41)  # 0-based epoch 40: weight exp(-1.25)
        logits, ensemble = objective.model(images)
    p = F.softmax(ensemble / 3, dim=1).double().numpy() + 1e-7
    kd = 0.0
    for branch in logits:
        log_q = F.log_softmax(branch / 3, dim=1).double().numpy()
        kd += 9 * (p * (np.log(p) - log_q)).sum() / 6
    assert out.losses['kd'].item() == pytest.approx(math.exp(-1.25) * kd, rel=1e-4)  # float32 vs float64
    assert out.losses['ce'].item() == pytest.approx(sum(F.cross_entropy(b, targets).item() for b in logits), rel=1e-6)
    assert out.losses['ce_ensemble'].item() == pytest.approx(F.cross_entropy(ensemble, targets).item(), rel=1e-6)
    assert torch.equal(out.logits, logits[0])


def test_kd_term_sends_no_gradient_into_the_gate():
    args = train_online_mcl.parse_args(['--arch', 'one_resnet8', '--dataset', 'digits'])
    objective = ONEObjective(ONENet('resnet8', 10, 'digits', 3), args).train()
    batch = type('Batch', (), dict(images=torch.randn(4, 3, 32, 32), targets=torch.tensor([0, 1, 2, 3])))
    objective.step(batch, epoch=100).losses['kd'].backward()
    assert all(p.grad is None or not p.grad.any() for p in objective.model.gate.parameters())
    assert objective.model.backbone.fc.weight.grad.abs().sum() > 0


# ---- the command line ----------------------------------------------------------------------------------------

def test_official_recipe_defaults_and_spellings():
    args = train_online_mcl.parse_args(['--arch', 'one_resnet32'])
    assert (args.epochs, args.batch_size, args.learning_rate, args.weight_decay, args.lr_decay,
            args.lr_decay_epochs, args.nesterov, args.momentum) == (300, 128, 0.1, 1e-4, 'step', [151, 225], False, 0.9)
    assert (args.num_branches, args.consistency_rampup, args.kd_T, args.peers) == (3, 80, 3, ['resnet32'])
    assert train_online_mcl.parse_args(['--arch', 'one_resnet110']).peers == ['resnet110_bottleneck']
    args = train_online_mcl.parse_args(['--arch', 'one_resnet32', '--schedule', '100', '200', '--wd', '5e-4',
                                        '--consistency_rampup', '10', '--num-branches', '4'])
    assert (args.lr_decay_epochs, args.weight_decay, args.consistency_rampup, args.num_branches) == \
        ([100, 200], 5e-4, 10, 4)
    args = train_online_mcl.parse_args(['--arch', 'one_ResNet18', '--dataset', 'imagenet'])
    assert (args.epochs, args.batch_size, args.lr_decay_epochs, args.weight_decay, args.lr_decay) == \
        (120, 256, [30, 60, 90], 1e-4, 'step')


def one_args(*argv, dataset='cifar100'):
    return train_online_mcl.parse_args(['--arch', 'one_resnet8', '--dataset', dataset, *argv])


@pytest.mark.parametrize('epochs, rampup', [(1, 1), (2, 1), (12, 3), (21, 6), (50, 13), (150, 40), (240, 64),
                                            (600, 160)])
def test_the_ramp_up_is_scaled_to_the_epochs_when_not_typed(epochs, rampup):
    """80 of ONE's 300 epochs: round(80 * epochs / 300) half up, at least 1 (21: 5.6 -> 6; 50: 13.3 -> 13)."""
    args = one_args('--epochs', str(epochs))
    assert args.consistency_rampup == 80 and args.recipe_schedule == {'consistency_rampup': rampup}
    assert schedule_note(args) == (f"schedules scaled to {epochs} of 300 epochs: consistency_rampup 80 -> {rampup} "
                                   f"(--no_recipe_scaling keeps them)")
    assert ONEObjective(ONENet('resnet8', 10, 'digits', 3), args).rampup == rampup


def test_the_ramp_up_is_kept_when_typed_at_300_epochs_and_with_no_recipe_scaling():
    for argv in (['--epochs', '12', '--consistency_rampup', '80'], ['--epochs', '12', '--no_recipe_scaling'], []):
        args = one_args(*argv)
        assert args.recipe_schedule == {} and schedule_note(args) == '', argv
        assert ONEObjective(ONENet('resnet8', 10, 'digits', 3), args).rampup == 80, argv
    assert one_args('--epochs', '12', '--consistency_rampup', '5').recipe_schedule == {}
    # ImageNet has no official ONE recipe: the 300-epoch one is the reference there too (120 epochs: 32)
    assert train_online_mcl.parse_args(['--arch', 'one_ResNet18', '--dataset', 'imagenet']).recipe_schedule == \
        {'consistency_rampup': 32}
    # the other online methods pin nothing and record the flag as they always did
    for argv in (['--arch', 'lmcl_resnet32_cifar'], ['--baseline', '--arch', 'resnet8'],
                 ['--uskd', '--arch', 'resnet8']):
        args = train_online_mcl.parse_args([*argv, '--epochs', '12'])
        assert args.recipe_schedule == {} and args.consistency_rampup == 80, argv


def test_a_short_run_uses_the_scaled_ramp_up_in_its_step():
    """12 epochs ramp over 3: epoch 3 (0-based 2) weighs exp(-5 (1/3)^2), epoch 4 the full KD term, where the
    unscaled 80-epoch ramp-up would still weigh exp(-5 (78/80)^2) and exp(-5 (77/80)^2)."""
    torch.manual_seed(3)
    batch = type('Batch', (), dict(images=torch.randn(4, 3, 32, 32), targets=torch.tensor([0, 1, 2, 3])))
    weights = {}
    for argv in (['--epochs', '12'], ['--epochs', '12', '--no_recipe_scaling']):
        objective = ONEObjective(ONENet('resnet8', 10, 'digits', 3), one_args(*argv)).eval()
        with torch.no_grad():
            logits, ensemble = objective.model(batch.images)
            full = sum(one_kl(branch, ensemble) for branch in logits).item()
            weights[len(argv)] = [objective.step(batch, epoch).losses['kd'].item() / full for epoch in (3, 4)]
    assert weights[2] == pytest.approx([math.exp(-5 / 9), 1.0], rel=1e-5)
    assert weights[3] == pytest.approx([math.exp(-5 * (78 / 80) ** 2), math.exp(-5 * (77 / 80) ** 2)], rel=1e-5)
    assert sigmoid_rampup(2, 3) == pytest.approx(math.exp(-5 / 9)) and sigmoid_rampup(3, 3) == 1.0


def test_help_says_the_ramp_up_is_scaled(capsys):
    with pytest.raises(SystemExit):
        train_online_mcl.parse_args(['--help'])
    out = ' '.join(capsys.readouterr().out.split())
    assert '--no_recipe_scaling' in out and "ONE's --consistency_rampup 80 of its 300 epochs" in out
    assert 'scaled by --epochs / 300' in out


@pytest.mark.parametrize('argv,message', [
    (['--arch', 'one_resnet33'], r"unknown model 'resnet33' for --arch \(after one_\); did you mean"),
    (['--arch', 'one_vgg8'], 'ONE has no branches for VGG'),
    (['--arch', 'one_resnet8', '--num-branches', '1'], '--num-branches must be at least 2'),
    (['--arch', 'one_resnet8', '--consistency_rampup', '-1'], '--consistency_rampup cannot be negative'),
    (['--arch', 'lmcl_resnet32_cifar', '--dataset', 'imagenet'], 'the ImageNet recipe of L-MCL is not part'),
])
def test_bad_input_is_one_clear_error(tmp_path, argv, message):
    with pytest.raises(KDZooError, match=message):
        train_online_mcl.main([*argv, '--save_root', str(tmp_path)])
    assert not os.path.exists(tmp_path / 'online')


small_digits = small_digits_fixture(96, 40)


def run_one(root, *extra):
    return train_online_mcl.main(['--arch', 'one_resnet8', '--dataset', 'digits', '--epochs', '2', '--batch_size',
                                  '32', '--deterministic', '--precision', 'fp32', '--save_root', str(root), *extra])


def test_run_writes_files_exports_branch0_and_resumes_exactly(tmp_path, small_digits, monkeypatch):
    whole = run_one(tmp_path / 'whole')
    record = whole['history'][-1]
    assert {'train_ce', 'train_ce_ensemble', 'train_kd', 'val_branch0_top1', 'val_branch2_top1',
            'val_ensemble_top1'} <= set(record)
    assert record['val_top1'] == record['val_branch0_top1']  # branch 0 is the deployed network
    folder = tmp_path / 'whole' / 'online' / 'models' / 'one_resnet8_x3_one_digits_trial_0'
    metrics = json.load(open(folder / 'metrics.json'))
    assert metrics['status'] == 'finished'
    # two epochs of ONE's 300 ramp up over one: recorded as the run's setting, said on the announce line
    assert metrics['run']['settings']['schedule'] == {'consistency_rampup': 1}
    assert metrics['run']['settings']['consistency_rampup'] == 80
    assert 'ramp-up 1 epochs; seed 12345; schedules scaled to 2 of 300 epochs: consistency_rampup 80 -> 1' in \
        (folder / 'log.txt').read_text()
    branch = folder / 'resnet8_branch0' / 'resnet8_branch0_last.pth'
    saved = torch.load(branch, weights_only=True)
    model_dict['resnet8'](num_classes=10).load_state_dict(saved['model'], strict=True)
    result = eval_tool.main(['--path', str(branch), '--dataset', 'digits', '--precision', 'fp32'])
    assert result['model'] == 'resnet8' and result['top1'] == pytest.approx(record['val_top1'])
    assert train_student.parse_args(['--path_t', str(branch), '--dataset', 'digits']).model_t == 'resnet8'

    parted = killed_then_resumed(monkeypatch, run_one, tmp_path / 'parted')
    assert parted['history'][-1]['train_loss'] == record['train_loss']
    last = 'online/models/one_resnet8_x3_one_digits_trial_0/one_resnet8_last.pth'
    a = torch.load(tmp_path / 'whole' / last, weights_only=True)['model']
    b = torch.load(tmp_path / 'parted' / last, weights_only=True)['model']
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
