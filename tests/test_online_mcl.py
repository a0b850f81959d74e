"""train_online_mcl.py: L-MCL's losses, the meta step, the class-balanced sampler, and the CLI end to end."""
import argparse
import copy
import json
import math
import os

import pytest
import torch

import train_online_mcl
import train_student
from dataset import build_data
from dataset.class_balanced import ClassBalancedOrder
from dataset.batches import epoch_generator
from helper.errors import KDZooError
from online.mcl import mcl_losses, ordered_pairs, pair_losses
from models import model_dict
from models.lmcl import HETEROGENEOUS, HOMOGENEOUS, peer_models
from online.lmcl import LMCL as OnlineObjective, PeerSet
from tools import eval as eval_tool

from conftest import run_script, write_fake_cifar100


def loss_args(**overrides):
    values = dict(feat_dim=16, learning_rate=0.1, momentum=0.9, weight_decay=5e-4, alpha=0.1, gamma=1.0, beta=0.1,
                  lam=1.0, tau=0.1, kd_T=3.0, meta_freq=50, times=2)
    return argparse.Namespace(**{**values, **overrides})


# ---- losses against a plain-Python computation -------------------------------------------------
def _contrastive_by_hand(sim, labels, weight):
    """-mean over anchors of weight * mean over same-class others of log(e^s_rc / sum_{c' != r} e^s_rc')."""
    n, total = len(labels), 0.0
    for r in range(n):
        denominator = sum(math.exp(sim[r][c]) for c in range(n) if c != r)
        positives = [c for c in range(n) if c != r and labels[c] == labels[r]]
        total += weight[r] * sum(sim[r][c] - math.log(denominator) for c in positives) / len(positives)
    return -total / n


def _kl_by_hand(student, teacher, temperature, weight):
    """T^2 / n * sum_r weight_r * KL(softmax(teacher_r / T) || softmax(student_r / T))."""
    def softmax(row):
        exps = [math.exp(v / temperature) for v in row]
        return [e / sum(exps) for e in exps]
    total = 0.0
    for r, (s_row, t_row) in enumerate(zip(student, teacher)):
        p_s, p_t = softmax(s_row), softmax(t_row)
        total += weight[r] * sum(t * math.log(t / s) for s, t in zip(p_s, p_t))
    return temperature ** 2 * total / len(student)


def test_each_contrastive_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    labels = torch.tensor([3, 1, 3, 1, 0, 0])
    a = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1)
    b = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1)
    weight = torch.tensor([0.9, 0.2, 0.5, 1.0, 0.7, 0.3], dtype=torch.float64)
    tau, temperature = 0.1, 3.0
    vcl, soft_vcl, icl, soft_icl = pair_losses(a, b, labels, weight[:, None], tau, temperature)

    sim = lambda x, y: (x @ y.t() / tau).tolist()  # noqa: E731
    ys, w = labels.tolist(), weight.tolist()
    assert float(vcl) == pytest.approx(_contrastive_by_hand(sim(a, a), ys, w) + _contrastive_by_hand(sim(b, b), ys, w))
    assert float(icl) == pytest.approx(_contrastive_by_hand(sim(a, b), ys, w) + _contrastive_by_hand(sim(b, a), ys, w))
    assert float(soft_vcl) == pytest.approx(_kl_by_hand(sim(a, a), sim(b, b), temperature, w)
                                            + _kl_by_hand(sim(b, b), sim(a, a), temperature, w))
    assert float(soft_icl) == pytest.approx(_kl_by_hand(sim(a, b), sim(b, a), temperature, w)
                                            + _kl_by_hand(sim(b, a), sim(a, b), temperature, w))


def test_soft_terms_send_no_gradient_to_their_target_view():
    a = torch.nn.functional.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    b = torch.nn.functional.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    _, soft_vcl, _, _ = pair_losses(a, b, torch.tensor([0, 0, 1, 1]), 1.0, 0.1, 3.0)
    # KL(aa || sg(bb)) + KL(bb || sg(aa)): each view's gradient comes from its own student term only.
    grad_a, = torch.autograd.grad(soft_vcl, a, retain_graph=True)
    alone, = torch.autograd.grad(pair_losses(a, b.detach(), torch.tensor([0, 0, 1, 1]), 1.0, 0.1, 3.0)[1], a)
    assert torch.allclose(grad_a, alone)


def test_mcl_losses_sum_every_ordered_pair_of_peers_and_stages():
    torch.manual_seed(1)
    labels = torch.tensor([0, 0, 1, 1])
    projected = [[torch.nn.functional.normalize(torch.randn(4, 8), dim=1) for _ in range(3)] for _ in range(2)]
    pairs = ordered_pairs(2, 3)
    assert len(pairs) == 18 and pairs[0] == (0, 0, 1, 0) and pairs[-1] == (1, 2, 0, 2)
    weights = [torch.rand(4) for _ in pairs]
    totals = mcl_losses(projected, labels, weights, 0.1, 3.0)
    expected = [sum(pair_losses(projected[i][k], projected[j][z], labels, w[:, None], 0.1, 3.0)[t]
                    for (i, k, j, z), w in zip(pairs, weights)) for t in range(4)]
    assert all(torch.allclose(x, y) for x, y in zip(totals, expected))


# ---- the meta step --------------------------------------------------------------------------------
def small_objective(**overrides):
    torch.manual_seed(0)
    return OnlineObjective(PeerSet(['resnet8', 'resnet8'], 10), loss_args(**overrides)).train()


def test_meta_step_updates_the_meta_network_and_leaves_the_peers_exactly_as_they_were():
    objective = small_objective()
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 1])
    peers, heads, aggregator, meta = (copy.deepcopy(m.state_dict()) for m in
                                      (objective.model, objective.heads, objective.aggregator, objective.meta_net))
    objective.meta_step(images, targets, lr=0.1)
    for before, module in ((peers, objective.model), (heads, objective.heads), (aggregator, objective.aggregator)):
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics included
    assert all(p.grad is None for p in objective.model.parameters())
    changed = [not torch.equal(meta[k], v) for k, v in objective.meta_net.state_dict().items()]
    assert all(changed)
    momentum = objective.meta_optimizer.state_dict()['state']
    assert momentum  # the meta network's Nesterov momentum, kept between meta steps

    resumed = small_objective()  # what --resume rebuilds, then loads
    resumed.load_resume_state(objective.model.state_dict(), objective.resume_state())
    assert all(torch.equal(v, resumed.meta_net.state_dict()[k]) for k, v in objective.meta_net.state_dict().items())
    assert torch.equal(resumed.meta_optimizer.state_dict()['state'][0]['momentum_buffer'],
                       momentum[0]['momentum_buffer'])


def test_meta_step_runs_on_the_first_step_and_every_meta_freq_steps(monkeypatch):
    objective = small_objective(meta_freq=3)
    calls = []
    monkeypatch.setattr(objective, 'meta_step', lambda images, targets, lr: calls.append(lr))
    for step in range(1, 8):
        objective.after_step(argparse.Namespace(images=None, targets=None), 1, step, 0.05)
    assert calls == [0.05] * 3  # steps 1, 4, 7


def test_meta_gradient_through_the_unrolled_steps_matches_finite_differences():
    # Without the soft (stop-gradient) terms the meta loss is an ordinary function of the meta weights.
    objective = small_objective(gamma=0.0, lam=0.0).double()
    images, targets = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 0, 1, 1])

    def meta_loss():
        weights = {f'{prefix}.{n}': p.detach().requires_grad_()
                   for prefix, m in (('model', objective.model), ('heads', objective.heads))
                   for n, p in m.named_parameters()}
        buffers = {n: b.clone() for n, b in objective.model.named_buffers()}
        velocity = {}
        for loss_of in (objective._inner_loss, objective._inner_loss, objective._outer_loss):
            weights, velocity = objective._virtual_sgd(loss_of(weights, buffers, images, targets), weights,
                                                       velocity, 0.1)
        return objective._outer_loss(weights, buffers, images, targets)

    param = objective.meta_net.proj[0][2].weight
    grad, = torch.autograd.grad(meta_loss(), param)
    values = []
    for shift in (1e-6, -2e-6):
        with torch.no_grad():
            param[3, 5] += shift
        values.append(meta_loss().item())
    plus, minus = values
    assert float(grad[3, 5]) == pytest.approx((plus - minus) / 2e-6, rel=1e-4, abs=1e-9)


def test_loss_falls_over_a_few_steps_on_digits():
    data = build_data('digits', None, 10, 'cpu', seed=0)
    data.train.batch_order = ClassBalancedOrder(data.train_labels, 10)
    data.train.set_epoch(1)
    batch = next(iter(data.train))
    objective = small_objective()
    optimizer = objective.optimizer(loss_args())  # the L-MCL repo's Nesterov SGD, the method's declaration
    losses = []
    for step in range(1, 7):
        loss = sum(objective.step(batch, 1).losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        objective.after_step(batch, 1, step, 0.1)  # a meta step after the first
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.85 * losses[0], losses


# ---- class-balanced batches -----------------------------------------------------------------------
def test_class_balanced_batches_hold_exactly_two_images_of_each_of_their_classes():
    labels = torch.cat([torch.arange(100).repeat(3), torch.tensor([7])])  # class 7 has 4 images
    order = ClassBalancedOrder(labels, 16)
    draw = order.draw(epoch_generator(5, 1, 0))
    assert order.num_batches == len(labels) // 16 and len(draw) == order.num_batches * 16
    for batch in draw.view(-1, 16):
        classes = labels[batch]
        assert sorted(torch.bincount(classes).tolist())[-8:] == [2] * 8 and (torch.bincount(classes) <= 2).all()
        assert len(set(batch.tolist())) == 16  # two different images of every class
    assert torch.equal(draw, order.draw(epoch_generator(5, 1, 0)))
    assert not torch.equal(draw, order.draw(epoch_generator(5, 2, 0)))


def test_the_in_memory_loader_serves_class_balanced_batches():
    data = build_data('digits', None, 20, 'cpu', seed=3)
    data.train.batch_order = ClassBalancedOrder(data.train_labels, 20)
    data.train.set_epoch(2)
    batches = list(data.train)
    assert len(batches) == len(data.train) == 1437 // 20
    for batch in batches:
        assert torch.bincount(batch.targets, minlength=10).tolist() == [2] * 10
        assert torch.equal(batch.targets, data.train_labels[batch.indices])
    data.train.set_epoch(2)
    assert all(torch.equal(x.images, y.images) for x, y in zip(batches, data.train))


@pytest.mark.parametrize('batch_size,images', [(15, 1000), (22, 1000), (16, 12)])
def test_batch_sizes_the_sampler_cannot_fill_are_refused(batch_size, images):
    labels = torch.arange(images) % 10  # 10 classes: at most 20 images a batch, and never more than there are
    with pytest.raises(KDZooError, match=f'--batch-size {batch_size} cannot be filled'):
        ClassBalancedOrder(labels, batch_size, '--batch-size')


# ---- models -------------------------------------------------------------------------------------------
def test_new_zoo_models_match_the_reference_sizes_and_the_forward_contract():
    # Parameter counts and state_dict sizes of the L-MCL repo's hcgnet_A1/A2_cifar and bottleneck resnet110_cifar.
    for name, params, entries in (('hcgnet_A1', 1102651, 1308), ('hcgnet_A2', 3133679, 1308),
                                  ('resnet110_bottleneck', 1170868, 674)):
        with torch.device('meta'):
            model = model_dict[name](num_classes=100)
        assert sum(p.numel() for p in model.parameters()) == params and len(model.state_dict()) == entries
    feats, logits = model_dict['hcgnet_A1'](num_classes=10).eval()(torch.randn(2, 3, 32, 32), is_feat=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 32, 32), (60, 16, 16), (126, 8, 8), (414, 8, 8), (414,)]
    assert logits.shape == (2, 10)


def test_every_table_arch_builds_peers_with_two_auxiliary_branches():
    for arch in [*HOMOGENEOUS, *HETEROGENEOUS]:
        with torch.device('meta'):
            peers = PeerSet(peer_models(arch, 2), 100)
        for peer in peers.peers:
            assert len(peer.branches) == 2
            width = peer.backbone.get_classifier().in_features
            assert all(branch.classifier.in_features == width for branch in peer.branches)


# ---- the command line -------------------------------------------------------------------------------
def online_args(save_root, data, arch, *extra):
    return ['--arch', arch, '--dataset', 'cifar100', '--data_folder', data, '--epochs', '1', '--batch-size', '4',
            '--precision', 'fp32', '--save_root', str(save_root), *extra]


@pytest.fixture(scope='module')
def small_cifar(tmp_path_factory):
    return write_fake_cifar100(str(tmp_path_factory.mktemp('data')), n_train=16, n_test=20)


@pytest.mark.slow
@pytest.mark.parametrize('arch,meta,peers', [
    ('lmcl_resnet32_cifar', True, ['resnet32', 'resnet32']),
    ('lmcl_res32_res110_cifar', False, ['resnet32', 'resnet110_bottleneck']),
])
def test_one_epoch_runs_write_metrics_and_standalone_peers(tmp_path, small_cifar, arch, meta, peers):
    state = train_online_mcl.main(online_args(tmp_path, small_cifar, arch, *([] if meta else ['--no-meta'])))
    record = state['history'][-1]
    assert record['val_top1'] == pytest.approx((record['val_peer0_top1'] + record['val_peer1_top1']) / 2)
    assert {'train_ce', 'train_kd', 'train_vcl', 'train_soft_icl', 'val_peer1_branch2_top1'} <= set(record)

    folder = tmp_path / 'online' / 'models' / f"{arch}_x2_{'lmcl' if meta else 'mcl'}_cifar100_trial_0"
    metrics = json.load(open(folder / 'metrics.json'))
    assert metrics['status'] == 'finished' and [p['model'] for p in metrics['peers']] == peers
    heads = [record[f'val_peer{i}_{h}'] for i in range(2) for h in ('top1', 'branch1_top1', 'branch2_top1')]
    assert metrics['released_code_best_top1'] == pytest.approx(max(heads))
    resume = torch.load(folder / f'{arch}_last.pth', weights_only=True)['kdzoo']['objective']
    assert ('meta_optimizer' in resume) == meta and any(k.startswith('aggregator.') for k in resume)

    for i, name in enumerate(peers):
        path = folder / f'{name}_peer{i}' / f'{name}_peer{i}_best.pth'
        saved = torch.load(path, weights_only=True)
        model_dict[name](num_classes=100).load_state_dict(saved['model'], strict=True)
        result = eval_tool.main(['--path', str(path), '--data_folder', small_cifar, '--precision', 'fp32'])
        assert result['model'] == name and result['top1'] == pytest.approx(record[f'val_peer{i}_top1'])
        assert train_student.parse_args(['--path_t', str(path)]).model_t == name


def test_baseline_trains_one_network_with_cross_entropy(tmp_path, small_cifar):
    state = train_online_mcl.main(online_args(tmp_path, small_cifar, 'resnet8', '--baseline'))
    folder = tmp_path / 'online' / 'models' / 'resnet8_baseline_cifar100_trial_0'
    assert set(state['history'][-1]) >= {'train_ce', 'val_top1'} and (folder / 'resnet8_best.pth').exists()
    assert eval_tool.main(['--path', str(folder / 'resnet8_best.pth'), '--data_folder', small_cifar,
                           '--precision', 'fp32'])['model'] == 'resnet8'


def test_lmcl_recipe_defaults_and_spellings():
    args = train_online_mcl.parse_args(['--arch', 'lmcl_wrn_40_2_cifar'])
    assert (args.epochs, args.batch_size, args.learning_rate, args.weight_decay, args.lr_decay) == \
        (300, 128, 0.1, 5e-4, 'cos')
    assert (args.alpha, args.gamma, args.beta, args.lam, args.tau, args.kd_T, args.meta_freq, args.times) == \
        (0.1, 1.0, 0.1, 1.0, 0.1, 3, 50, 2)
    args = train_online_mcl.parse_args(['--arch', 'lmcl_hcgnet_A1_cifar', '--number-net', '4', '--init-lr', '0.05',
                                        '--lr-type', 'multistep', '--milestones', '100', '200'])
    assert args.peers == ['hcgnet_A1'] * 4 and args.learning_rate == 0.05
    assert args.lr_decay == 'step' and args.lr_decay_epochs == [100, 200]


@pytest.mark.parametrize('argv,message', [
    (['--arch', 'lmcl_resnet33_cifar'], "unknown --arch 'lmcl_resnet33_cifar' (did you mean lmcl_resnet32_cifar"),
    (['--arch', 'lmcl_res32_res111_cifar'], 'did you mean lmcl_res32_res110_cifar'),
    (['--arch', 'resnet33', '--baseline'], "unknown --arch 'resnet33' for --baseline"),
    (['--number-net', '1'], '--number-net must be at least 2'),
    (['--arch', 'lmcl_shufflev2_res110_cifar', '--number-net', '3'], 'is a pair of two different networks'),
    (['--meta-freq', '0'], '--meta-freq must be at least 1'),
    (['--dataset', 'digits', '--batch-size', '21'], '--batch-size 21 cannot be filled by the class-balanced'),
    (['--dataset', 'digits', '--batch-size', '40'], 'at most 20 for these 10 classes'),
])
def test_bad_input_is_one_clear_error(tmp_path, argv, message):
    with pytest.raises(KDZooError, match=message.replace('(', r'\(')):
        train_online_mcl.main([*argv, '--save_root', str(tmp_path)])
    assert not os.path.exists(tmp_path / 'online')


@pytest.mark.slow
def test_bad_input_from_the_command_line_is_one_line(tmp_path):
    result = run_script('train_online_mcl.py', '--arch', 'lmcl_resnet32', '--save_root', tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().startswith("error: unknown --arch 'lmcl_resnet32'")
