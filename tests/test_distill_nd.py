"""ND and the ++ methods (distiller_zoo/ND.py, tools/nd_centers.py): the loss against numbers worked out by
hand and its gradient against autograd through a per-sample loop, the class centres against means taken
sample by sample over the same (replayed) augmented batches, the centre file and its one-line mismatch
errors, per-pair defaults and ND's warm-up, the EmbTrans projector on ND's pairs, training steps on
digits, and one-epoch command-line runs of kd++, dkd++, dist++ and reviewkd++ on fake CIFAR-100."""
import json
import math
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_student
from distiller_zoo.teacher import probe_networks
from dataset import build_data
from dataset.batches import Batch
from dataset.memory import InMemoryLoader
from distiller_zoo import DISTILLERS
from distiller_zoo.DKD import dkd_loss
from distiller_zoo.ND import (EmbTrans, NDMixin, centers_record, check_centers, class_centers, compute_centers,
                              nd_loss, read_centers, teacher_fingerprint, write_centers)
from distiller_zoo.base import kd_loss
from models.features import run_network
from helper.errors import KDZooError, run_cli
from engine.setup import sgd
from models import model_dict

from conftest import REPO, write_fake_cifar100

ND_PAIRS = [('resnet56', 'resnet20'), ('resnet32x4', 'resnet8x4'), ('wrn_40_2', 'wrn_40_1'),
            ('ResNet50', 'MobileNetV2'), ('resnet32x4', 'ShuffleV1'), ('resnet32x4', 'ShuffleV2')]


def parse(name, model_t, model_s, *flags):
    return train_student.parse_args(['--path_t', f'somewhere/{model_t}.pth', '--model_t', model_t,
                                     '--model_s', model_s, '--distill', name, *flags])


def random_centers(num_classes, dim, seed=0):
    return torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def build(name, model_t, model_s, centers_file, *flags, num_classes=100, data=None):
    """(method, student, teacher) built as train_student.build_objective does, centres from ``centers_file``."""
    args = parse(name, model_t, model_s, '--centers', str(centers_file), *flags)
    torch.manual_seed(0)
    teacher = model_dict[model_t](num_classes=num_classes).eval()
    student = model_dict[model_s](num_classes=num_classes)
    probe_s, probe_t = probe_networks(student, teacher, DISTILLERS[name].preact, 32)
    return DISTILLERS[name](args, student, teacher, probe_s, probe_t, data), student, teacher


def nd_format_file(path, centers):
    """A centre file as ND's emb_fea_distribution.py writes it: {"0": [...], "1": [...], ...}."""
    with open(path, 'w') as f:
        json.dump({str(k): row for k, row in enumerate(centers.tolist())}, f)
    return path


# ---------------------------------------------------------------------------------------------- the loss

def test_nd_loss_equals_the_hand_computed_values():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # class directions
    rows = [  # (student, teacher, label, 1 - <s, e_y> / max(|s|, |t|) worked out by hand)
        ((0.01, 0.0), (10.0, 0.0), 0, 1 - 0.01 / 10),   # aligned, student far shorter: the norm term is active
        ((100.0, 0.0), (1.0, 0.0), 0, 0.0),             # aligned, student far longer: pure cosine, 0
        ((-3.0, 0.0), (1.0, 1.0), 0, 2.0),              # opposite, student longer: 1 - (-1)
        ((0.0, -0.5), (2.0, 0.0), 1, 1.25),             # opposite, student shorter: 1 + 0.5 / 2
        ((3.0, 4.0), (0.0, 10.0), 1, 0.6),              # 45-ish degrees, teacher longer: 1 - 4 / 10
        ((3.0, 4.0), (1.0, 0.0), 0, 0.4),               # same student, teacher shorter: 1 - 3 / 5
        ((0.0, 2.0), (2.0, 0.0), 0, 1.0),               # orthogonal: 1 whatever the norms
    ]
    s = torch.tensor([r[0] for r in rows], dtype=torch.float64)
    t = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    y = torch.tensor([r[2] for r in rows])
    for i, row in enumerate(rows):
        assert nd_loss(s[i:i + 1], t[i:i + 1], e, y[i:i + 1]).item() == pytest.approx(row[3], abs=1e-6)
    assert nd_loss(s, t, e, y).item() == pytest.approx(sum(r[3] for r in rows) / len(rows), abs=1e-6)
    # the loss falls as a short aligned student grows towards the teacher's norm, then stays at 0
    values = [nd_loss(torch.tensor([[a, 0.0]]), torch.tensor([[4.0, 0.0]]), e, torch.tensor([0])).item()
              for a in (0.5, 1, 2, 4, 8)]
    assert values == pytest.approx([0.875, 0.75, 0.5, 0.0, 0.0])


def loop_nd(s, t, centers, y):
    """ND's own formulation, sample by sample, with Python's max of the two norms."""
    total = 0.0
    for s_i, t_i, y_i in zip(s, t, y):
        e = centers[y_i] / centers[y_i].norm()
        total = total + 1 - torch.dot(s_i, e) / max(s_i.norm(), t_i.norm())
    return total / len(y)


def test_nd_gradient_matches_autograd_through_a_per_sample_loop():
    gen = torch.Generator().manual_seed(3)
    centers = random_centers(5, 8, seed=1) + 0.5
    s = torch.randn(12, 8, generator=gen, dtype=torch.float64)
    s[:6] *= 0.1  # half the students far shorter than their teachers, half far longer
    s[6:] *= 10
    s.requires_grad_(True)
    t = torch.randn(12, 8, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = torch.randint(0, 5, (12,), generator=gen)
    value = nd_loss(s, t, F.normalize(centers, dim=1), y)
    value.backward()
    grad_s, grad_t = s.grad.clone(), t.grad
    s.grad = None
    expected = loop_nd(s, t.detach(), centers, y)
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(grad_s, s.grad, rtol=1e-5, atol=1e-7)
    assert grad_t is None or not grad_t.any()  # nothing reaches the teacher
    # closed forms: -e / |t| while the student is shorter; the cosine's gradient once it is longer
    e = F.normalize(centers, dim=1)[y]
    sd = s.detach()
    short = -e[:6] / t.detach()[:6].norm(dim=1, keepdim=True)
    n = sd[6:].norm(dim=1, keepdim=True)
    long = -(e[6:] / n - (sd[6:] * e[6:]).sum(1, keepdim=True) * sd[6:] / n ** 3)
    assert torch.allclose(grad_s, torch.cat([short, long]) / 12, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------- centres

@pytest.fixture(scope='module')
def small_train_loader():
    """Digits' first 120 training images (every class present) in a training loader: augmented, replayable."""
    train = build_data('digits', '', 64, 'cpu', seed=3).train
    return InMemoryLoader(train.images[:120].contiguous(), train.labels[:120], 40, train.mean.tolist(),
                          train.std.tolist(), train=True, seed=3)


def test_centres_are_the_class_means_of_the_replayed_augmented_batches(small_train_loader):
    loader = small_train_loader
    torch.manual_seed(0)
    teacher = model_dict['resnet8'](num_classes=10).train()
    bn_before = teacher.bn1.running_mean.clone()
    centers = compute_centers(teacher, loader, 10)
    assert teacher.training and torch.equal(teacher.bn1.running_mean, bn_before)  # run in eval mode, mode restored
    loader.set_epoch(0)  # the same epoch replays the same shuffle, crops and flips
    per_class = defaultdict(list)
    teacher.eval()
    with torch.no_grad():
        for batch in loader:
            for embedding, label in zip(teacher(batch.images, is_feat=True)[0][-1], batch.targets):
                per_class[int(label)].append(embedding.double().numpy())
    expected = np.stack([np.mean(per_class[k], axis=0) for k in range(10)])
    assert sum(len(v) for v in per_class.values()) == 120
    np.testing.assert_allclose(centers.numpy(), expected, rtol=1e-9, atol=1e-9)
    # the batches are augmented: epoch 1 draws other crops and flips, so its means differ
    loader.set_epoch(1)
    assert not torch.allclose(class_centers(teacher, loader, 10), centers, atol=1e-4)


def test_a_class_without_images_is_a_one_line_error():
    teacher = model_dict['resnet8'](num_classes=3)
    batches = [Batch(torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 2, 2]), torch.arange(4))]
    with pytest.raises(KDZooError, match='class 1 has no training images') as err:
        compute_centers(teacher, type('Loader', (list,), {'set_epoch': lambda self, e: None})(batches), 3)
    assert '\n' not in str(err.value)


def test_centre_file_round_trip_and_each_mismatch_is_one_line(tmp_path):
    teacher = model_dict['resnet8'](num_classes=10)
    other = model_dict['resnet8'](num_classes=10)
    centers = random_centers(10, 64)
    path = str(tmp_path / 'c.json')
    write_centers(path, centers, centers_record(teacher, model='resnet8', path_t=str(tmp_path / 'no.pth'),
                                                dataset='digits', num_images=1437, seed=0))
    read, record = read_centers(path)
    assert torch.equal(read, centers) and record['teacher']['weights_sha256'] == teacher_fingerprint(teacher)
    expect = dict(model='resnet8', dataset='digits', num_classes=10, dim=64, fingerprint=teacher_fingerprint(teacher))
    check_centers(path, read, record, **expect)
    cases = [(dict(num_classes=100), 'are for 10 classes, but digits has 100'),
             (dict(dim=256), "are 64-d, but resnet8's embedding is 256-d"),
             (dict(dataset='cifar100'), 'were computed on digits, not cifar100'),
             (dict(fingerprint=teacher_fingerprint(other)), 'were computed for other resnet8 weights')]
    for change, message in cases:
        with pytest.raises(KDZooError, match=message) as err:
            check_centers(path, read, record, **{**expect, **change})
        assert '\n' not in str(err.value) and 'delete' in str(err.value)
    # ND's own files: read, and only the class count and width can be checked
    nd_path = nd_format_file(tmp_path / 'center_emb_train.json', centers)
    read, record = read_centers(nd_path)
    assert torch.allclose(read, centers) and record is None
    check_centers(nd_path, read, None, **{**expect, 'fingerprint': None})
    with pytest.raises(KDZooError, match='are for 10 classes'):
        check_centers(nd_path, read, None, **{**expect, 'num_classes': 100})
    for content in ('not json', '[1, 2]', '{"0": [1.0], "1": [2.0, 3.0]}', '{"0": [0.0, 0.0]}'):
        (tmp_path / 'bad.json').write_text(content)
        with pytest.raises(KDZooError) as err:
            read_centers(str(tmp_path / 'bad.json'))
        assert '\n' not in str(err.value)


def test_the_teacher_fingerprint_follows_the_weights_not_the_layout():
    teacher = model_dict['resnet8'](num_classes=10)
    before = teacher_fingerprint(teacher)
    assert teacher_fingerprint(teacher.to(memory_format=torch.channels_last)) == before
    with torch.no_grad():
        teacher.fc.bias[3] += 1e-3
    assert teacher_fingerprint(teacher) != before


# ---------------------------------------------------------------------------------------------- defaults

# METHODS.md §3.1 (ND's scripts): KD++ (kd, nd), DKD++ (alpha, beta, nd), DIST++ (dist, nd), ReviewKD++ (review, nd)
ND_TABLE = {('resnet56', 'resnet20'): ((1.0, 2.0), (2.5, 4.0, 3.5), (2.0, 1.0), (1.2, 1.0)),
            ('resnet32x4', 'resnet8x4'): ((3.5, 2.0), (2.0, 8.0, 0.5), (1.5, 4.0), (8.0, 1.0)),
            ('wrn_40_2', 'wrn_40_1'): ((1.0, 1.5), (1.0, 6.0, 1.0), (2.5, 3.0), (5.0, 4.0)),
            ('ResNet50', 'MobileNetV2'): ((3.0, 0.5), (0.5, 8.0, 1.0), (7.0, 1.0), (6.0, 2.0)),
            ('resnet32x4', 'ShuffleV1'): ((2.5, 1.5), (0.5, 8.0, 4.0), (2.5, 3.0), (7.0, 1.0)),
            ('resnet32x4', 'ShuffleV2'): ((4.0, 0.5), (0.5, 6.0, 0.5), (3.0, 4.0), (8.0, 1.5))}


def weights_of(name, pair, *flags):
    args = parse(name, *pair, *flags)
    return args, (args.gamma, args.alpha, args.beta, args.nd_weight)


@pytest.mark.parametrize('pair', list(ND_TABLE) + [('wrn_40_2', 'wrn_16_2')], ids=lambda p: f'{p[0]}-{p[1]}')
def test_defaults_are_nds_per_pair(pair):
    kd, dkd, dist, review = ND_TABLE.get(pair, ND_TABLE[('resnet32x4', 'resnet8x4')])  # other pairs: ND's A pair
    assert weights_of('kd++', pair)[1] == (1.0, kd[0], 0.0, kd[1])
    args, weights = weights_of('dkd++', pair)
    assert weights == (1.0, 0.0, 1.0, dkd[2]) and (args.dkd_alpha, args.dkd_beta, args.dkd_T) == (*dkd[:2], 4.0)
    args, weights = weights_of('dist++', pair)
    assert weights == (1.0, 0.0, dist[0], dist[1]) and (args.dist_tau, args.dist_beta, args.dist_gamma) == (4, 1, 1)
    assert weights_of('reviewkd++', pair)[1] == (1.0, 0.0, review[0], review[1])
    for name in ('kd', 'dkd', 'dist', 'reviewkd'):
        assert DISTILLERS[f'nd_{name}'] is DISTILLERS[f'{name}++']
        assert parse(f'{name}++', *pair).nd_warmup == 20


def test_given_flags_win_over_nds_values():
    pair = ('resnet32x4', 'resnet8x4')
    assert weights_of('kd++', pair, '-a', '2', '--nd_weight', '0.7')[1] == (1.0, 2.0, 0.0, 0.7)
    args = parse('dkd++', *pair, '--dkd_alpha', '1')  # equal to DKD's default, yet given: it stays
    assert (args.dkd_alpha, args.dkd_beta) == (1.0, 8.0)
    args = parse('dkd++', *pair, '--dkd_alpha=3', '--dkd_beta', '2', '--nd_warmup', '5')
    assert (args.dkd_alpha, args.dkd_beta, args.nd_warmup) == (3.0, 2.0, 5)
    assert parse('dkd', *pair).dkd_alpha == 1.0  # plain DKD keeps its own defaults
    _, weights = weights_of('mkl++', ('resnet56', 'resnet20'))  # a method ND did not tune: its own defaults
    assert weights == (1.0, 0.0, 2.0, 1.0)
    args = parse('dkd++', 'ResNet34', 'ResNet18', '--dataset', 'imagenet')
    assert (args.dkd_alpha, args.dkd_beta, args.nd_weight, args.nd_warmup, args.dkd_T) == (0.8, 0.5, 1.0, 5, 1.0)


@pytest.mark.parametrize('flags, message', [(['--nd_weight', '-1'], '--nd_weight cannot be negative'),
                                            (['--nd_warmup', '-2'], '--nd_warmup cannot be negative')])
def test_bad_nd_flags_are_refused(flags, message):
    with pytest.raises(KDZooError, match=message):
        parse('kd++', 'resnet56', 'resnet20', *flags)


def test_every_logit_only_method_has_a_plus_plus():
    plain = [name for name, cls in DISTILLERS.items() if name == cls.name and not issubclass(cls, NDMixin)
             and not cls.needs_feats]
    assert {'kd', 'dkd', 'dist', 'mkl', 'ntce'} <= set(plain)
    for name in plain:
        cls = DISTILLERS[f'{name}++']
        assert issubclass(cls, NDMixin) and issubclass(cls, DISTILLERS[name]) and cls.needs_feats
    assert issubclass(DISTILLERS['reviewkd++'], DISTILLERS['reviewkd'])
    assert 'crd++' not in DISTILLERS  # feature methods get none by default


# ---------------------------------------------------------------------------------------------- the method

@pytest.mark.parametrize('pair', ND_PAIRS, ids=lambda p: f'{p[0]}-{p[1]}')
def test_embtrans_only_where_the_widths_differ(pair, tmp_path):
    widths = {'resnet56': 64, 'resnet20': 64, 'resnet32x4': 256, 'resnet8x4': 256, 'wrn_40_2': 128, 'wrn_40_1': 64,
              'ResNet50': 2048, 'MobileNetV2': 1280, 'ShuffleV1': 960, 'ShuffleV2': 1024}
    dim_t, dim_s = widths[pair[0]], widths[pair[1]]
    centers_file = nd_format_file(tmp_path / 'c.json', random_centers(100, dim_t))
    method, student, teacher = build('kd++', *pair, centers_file)
    if dim_s == dim_t:
        assert method.projector is None
    else:
        bn, dropout, linear = method.projector.layers
        assert (bn.num_features, linear.in_features, linear.out_features, dropout.p) == (dim_s, dim_s, dim_t, 0.5)
        assert torch.equal(bn.weight, torch.ones(dim_s)) and not bn.bias.any() and not linear.bias.any()
    assert torch.allclose(method.directions.norm(dim=1), torch.ones(100))
    assert method.trainable_modules() == ([method] if method.projector is not None else [])


def test_embtrans_takes_a_batch_of_one_while_training():
    projector = EmbTrans(8, 4).train()
    assert projector(torch.randn(1, 8)).shape == (1, 4) and projector.training
    assert projector(torch.randn(5, 8)).shape == (5, 4)


@pytest.mark.parametrize('name', ['kd++', 'dkd++'])
def test_terms_are_the_base_methods_under_nds_warm_up_plus_nd(name, tmp_path):
    centers = random_centers(100, 64)
    method, student, teacher = build(name, 'resnet56', 'resnet20', nd_format_file(tmp_path / 'c.json', centers))
    assert torch.allclose(method.directions, F.normalize(centers, dim=1).float())  # e_k = c_k / |c_k|
    method.train()
    images, targets = torch.randn(6, 3, 32, 32), torch.randint(0, 100, (6,))
    batch = Batch(images, targets, torch.arange(6))
    with torch.no_grad():
        out_t = run_network(teacher, images, True, False)
    out_s = run_network(student, images, True, False)
    nd = method.nd_weight * nd_loss(out_s.feats[-1], out_t.feats[-1], F.normalize(centers, dim=1), targets)
    if name == 'kd++':
        key, full = 'kd', 1.0 * kd_loss(out_s.logits, out_t.logits, 4.0)
        assert method.nd_weight == 2.0
    else:  # DKD's own warm-up is off: only ND's ramp applies
        key, full = 'dkd++', dkd_loss(out_s.logits, out_t.logits, targets, 2.5, 4.0, 4.0)
        assert method.nd_weight == 3.5 and method.ramp(1) == 1.0
    ce = F.cross_entropy(out_s.logits, targets)
    for epoch, ramp in ((1, 0.0), (2, 0.05), (11, 0.5), (21, 1.0), (200, 1.0)):
        terms = method.losses(out_s, out_t, batch, epoch)
        assert set(terms) == {'ce', key, 'nd'}
        assert terms['ce'].item() == pytest.approx(ce.item(), rel=1e-6)
        assert terms[key].item() == pytest.approx(ramp * full.item(), rel=1e-5, abs=1e-9)
        assert terms['nd'].item() == pytest.approx(nd.item(), rel=1e-6)


def test_missing_centres_without_training_data_is_a_one_line_error(tmp_path):
    with pytest.raises(KDZooError, match='does not exist and there is no training data') as err:
        build('dist++', 'resnet56', 'resnet20', tmp_path / 'none.json')
    assert '\n' not in str(err.value) and 'tools/nd_centers.py' in str(err.value)


def test_centres_of_another_teacher_stop_the_cli_with_one_line(tmp_path, capsys):
    folder = tmp_path / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0'
    folder.mkdir(parents=True)
    torch.save({'model': model_dict['resnet8'](num_classes=10).state_dict()}, folder / 'resnet8_best.pth')
    other = model_dict['resnet8'](num_classes=10)
    write_centers(str(folder / 'resnet8_best_center_emb_train.json'), random_centers(10, 64),
                  centers_record(other, model='resnet8', path_t='elsewhere.pth', dataset='digits', num_images=1,
                                 seed=0))
    with pytest.raises(SystemExit) as stop:
        run_cli(train_student.main, ['--path_t', str(folder / 'resnet8_best.pth'), '--distill', 'kd++',
                                     '--dataset', 'digits', '--epochs', '1', '--save_root', str(tmp_path)])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and 'were computed for other resnet8 weights' in lines[0]


def save_teacher(root, model, num_classes, dataset_suffix=''):
    """A randomly initialised teacher saved in our checkpoint format, in the folder train_teacher.py uses."""
    folder = root / 'teachers' / 'models' / f'{model}_vanilla{dataset_suffix}'
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    path = folder / f'{model}_best.pth'
    torch.save({'model': model_dict[model](num_classes=num_classes).state_dict(), 'epoch': 1}, path)
    return path


def test_kdpp_steps_lower_the_loss_on_digits(tmp_path, capsys):
    path_t = save_teacher(tmp_path, 'wrn_16_2', 10, '_digits_trial_0')  # 128-d teacher, 64-d student: EmbTrans
    nd_format_file(str(path_t).replace('.pth', '_center_emb_train.json'), random_centers(10, 128) + 1)
    args = train_student.parse_args(['--path_t', str(path_t), '--distill', 'kd++', '--model_s', 'resnet8',
                                     '--dataset', 'digits', '--batch_size', '16', '--deterministic',
                                     '--save_root', str(tmp_path)])
    data = build_data('digits', '', 16, 'cpu', seed=0)
    objective = train_student.build_objective(args, data, torch.device('cpu'), 'fp32')
    assert 'EmbTrans 64->128' in capsys.readouterr().out
    optimizer = sgd(objective.trainable_modules(), args)
    projector = objective.method.projector.layers[2].weight
    assert any(p is projector for group in optimizer.param_groups for p in group['params'])
    projector_before, teacher_before = projector.detach().clone(), objective.teacher.state_dict()['fc.weight'].clone()
    data.train.set_epoch(1)
    batch = next(iter(data.train))
    objective.train()
    losses = []
    for _ in range(12):  # one batch again and again: the total and the ND term must come down
        terms = objective.step(batch, epoch=30).losses
        total = sum(terms.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append((total.item(), terms['nd'].item()))
    assert losses[-1][0] < 0.8 * losses[0][0] and losses[-1][1] < losses[0][1], losses
    assert not torch.equal(projector.detach(), projector_before)
    assert torch.equal(objective.teacher.state_dict()['fc.weight'], teacher_before)


# ---------------------------------------------------------------------------------------------- the command lines

def start(script, *args, cwd):
    """A script run as a user would (conftest.run_script), started without waiting: most of a short run is
    starting Python, so the runs of a test overlap. One thread each, so that they do not fight over cores."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process):
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return stdout


@pytest.mark.slow
def test_cli_one_epoch_of_each_nd_method_on_fake_cifar(tmp_path):
    data = write_fake_cifar100(str(tmp_path / 'data'), n_train=100, n_test=50)  # every class once
    path_t = save_teacher(tmp_path / 'save', 'wrn_16_2', 100)  # 128-d teacher, 64-d resnet8 student: EmbTrans
    common = ['--path_t', path_t, '--model_s', 'resnet8', '--epochs', '1', '--batch_size', '25', '--seed', '0',
              '--precision', 'fp32', '--data_folder', data, '--save_root', tmp_path / 'save']
    nd_weights = {'kd++': 2.0, 'dkd++': 0.5, 'dist++': 4.0, 'reviewkd++': 1.0}  # ND's A-pair values for other pairs

    # kd++ finds no centre file, computes the centres and writes them beside the teacher; meanwhile the tool
    # computes them from the same seed and batch size into a file of its own
    kd_run = start('train_student.py', '--distill', 'kd++', *common, cwd=tmp_path)
    tool_run = start('tools/nd_centers.py', '--path_t', path_t, '--data_folder', data, '--batch_size', '25',
                     '--seed', '0', '--out', tmp_path / 'tool.json', cwd=tmp_path)
    stdout = finish(kd_run)
    assert 'computing the class centres of teacher wrn_16_2' in stdout and 'EmbTrans 64->128' in stdout
    assert 'written to' in finish(tool_run)
    centers, record = read_centers(str(path_t).replace('.pth', '_center_emb_train.json'))
    assert centers.shape == (100, 128) and record['num_images'] == 100 and record['teacher']['model'] == 'wrn_16_2'
    tool_centers, tool_record = read_centers(str(tmp_path / 'tool.json'))
    assert torch.allclose(tool_centers, centers, rtol=1e-6, atol=1e-8)
    assert tool_record['teacher']['weights_sha256'] == record['teacher']['weights_sha256']

    # the other three read the file
    runs = [start('train_student.py', '--distill', name, *common, cwd=tmp_path) for name in ('dkd++', 'dist++',
                                                                                            'reviewkd++')]
    for process in runs:
        stdout = finish(process)
        assert 'class centres of teacher wrn_16_2 read from' in stdout and 'EmbTrans 64->128' in stdout
    for name, nd_weight in nd_weights.items():
        folder = next((tmp_path / 'save' / 'students' / 'models').glob(f'S:resnet8_T:wrn_16_2_cifar100_{name}_*'))
        metrics = json.load(open(folder / 'metrics.json'))
        assert metrics['status'] == 'finished' and metrics['args']['nd_weight'] == nd_weight
        last = torch.load(folder / 'resnet8_last.pth', weights_only=True)
        assert set(last['model']) == set(model_dict['resnet8'](num_classes=100).state_dict())  # the plain student


@pytest.mark.slow
def test_nd_table_script_spells_out_the_defaults():
    result = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'run_nd_table.sh')],
                            env=dict(os.environ, DRY_RUN='1', TRIALS='0', PACK='0'), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [line.split()[2:] for line in result.stdout.splitlines()]
    assert len(commands) == 24
    explicit = {'-r', '-a', '-b', '--nd_weight', '--dkd_alpha', '--dkd_beta', '--learning_rate'}
    seen = set()
    for words in commands:
        args = train_student.parse_args(words)
        bare = [w for i, w in enumerate(words) if w not in explicit and (i == 0 or words[i - 1] not in explicit)]
        defaults = train_student.parse_args(bare)
        for key in ('gamma', 'alpha', 'beta', 'nd_weight', 'dkd_alpha', 'dkd_beta'):
            assert getattr(args, key) == getattr(defaults, key), (words, key)
        assert (args.batch_size, args.epochs, args.lr_decay_epochs) == (128, 240, [150, 180, 210])
        assert args.learning_rate == (0.02 if args.model_s in ('ShuffleV1', 'ShuffleV2', 'MobileNetV2') else 0.1)
        seen.add((args.distill, args.model_t, args.model_s))
    assert seen == {(name, *pair) for name in ('kd++', 'dkd++', 'dist++', 'reviewkd++') for pair in ND_PAIRS}
    assert math.isclose(train_student.parse_args(commands[0]).nd_weight, 2.0)
