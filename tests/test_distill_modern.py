"""DKD, DIST, ReviewKD and OFD: each loss and its gradient against a NumPy computation written from the
formula, the warm-ups, the modules built for real teacher:student pairs, the defaults, and bad input."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import norm, truncnorm

import train_student
from distiller_zoo.teacher import probe_networks, run_teacher
from distiller_zoo import DISTILLERS
from distiller_zoo.base import kd_loss
from distiller_zoo.DIST import DIST
from distiller_zoo.DKD import dkd_loss, dkd_parts
from distiller_zoo.OFD import ofd_feat_loss, ofd_margin
from distiller_zoo.ReviewKD import hcl_loss
from helper.errors import KDZooError, run_cli
from models.registry import build_model

from conftest import numeric_grad

RNG = np.random.default_rng(0)


def value_and_grad(torch_fn, x, *rest):
    """Value of torch_fn(x, *rest) and its gradient with respect to x (float64)."""
    x = torch.tensor(x, requires_grad=True)
    value = torch_fn(x, *[torch.tensor(r) if isinstance(r, np.ndarray) else r for r in rest])
    value.backward()
    return float(value.detach()), x.grad.numpy()


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


# ---------------------------------------------------------------------------------------------- DKD

def np_dkd_parts(z_s, z_t, targets, T):
    """Per sample: T^2 KL of [p_y, 1 - p_y] and T^2 KL of the softmax over the classes other than y."""
    tckd, nckd = [], []
    for zs, zt, y in zip(z_s, z_t, targets):
        ps, pt = softmax(zs / T), softmax(zt / T)
        bs, bt = np.array([ps[y], 1 - ps[y]]), np.array([pt[y], 1 - pt[y]])
        tckd.append(T ** 2 * np.sum(bt * np.log(bt / bs)))
        rest = [c for c in range(len(zs)) if c != y]
        qs, qt = softmax(zs[rest] / T), softmax(zt[rest] / T)
        nckd.append(T ** 2 * np.sum(qt * np.log(qt / qs)))
    return np.array(tckd), np.array(nckd)


def test_dkd_value_and_gradient_match_the_formula():
    z_s, z_t = RNG.normal(0, 3, (5, 7)), RNG.normal(0, 3, (5, 7))
    targets = np.array([0, 3, 6, 3, 1])
    alpha, beta, T = 1.0, 8.0, 4.0

    def reference(zs):
        tckd, nckd = np_dkd_parts(zs, z_t, targets, T)
        return np.mean(alpha * tckd + beta * nckd)
    value, grad = value_and_grad(lambda zs, zt: dkd_loss(zs, zt, torch.tensor(targets), alpha, beta, T), z_s, z_t)
    assert value == pytest.approx(reference(z_s), rel=1e-10)
    np.testing.assert_allclose(grad, numeric_grad(reference, z_s), rtol=1e-6, atol=1e-9)


def test_dkd_with_nckd_weighted_by_the_teachers_non_target_mass_is_classic_kd():
    z_s, z_t = RNG.normal(0, 2, (6, 10)), RNG.normal(0, 2, (6, 10))
    targets = np.array([1, 2, 3, 4, 5, 9])
    T = 4.0
    kd_per_sample = np.array([T ** 2 * np.sum(softmax(zt / T) * np.log(softmax(zt / T) / softmax(zs / T)))
                              for zs, zt in zip(z_s, z_t)])
    tckd, nckd = dkd_parts(torch.tensor(z_s), torch.tensor(z_t), torch.tensor(targets), T)
    p_target = np.array([softmax(zt / T)[y] for zt, y in zip(z_t, targets)])
    np.testing.assert_allclose((tckd + torch.tensor(1 - p_target) * nckd).numpy(), kd_per_sample, rtol=1e-10)
    assert float((tckd + torch.tensor(1 - p_target) * nckd).mean()) == pytest.approx(
        float(kd_loss(torch.tensor(z_s), torch.tensor(z_t), T)), rel=1e-6)


def test_dkd_stays_finite_when_the_student_is_certain():
    z_s = torch.tensor([[200.0, 0.0, 0.0], [0.0, -200.0, 0.0]], requires_grad=True)
    loss = dkd_loss(z_s, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 1]), 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_s.grad).all()


# ---------------------------------------------------------------------------------------------- DIST

def np_pearson(a, b, eps=1e-8):
    a, b = a - a.mean(), b - b.mean()
    return np.sum(a * b) / (np.sqrt(np.sum(a * a)) * np.sqrt(np.sum(b * b)) + eps)


def np_dist(z_s, z_t, beta, gamma, tau):
    y_s = np.array([softmax(z / tau) for z in z_s])
    y_t = np.array([softmax(z / tau) for z in z_t])
    inter = 1 - np.mean([np_pearson(y_s[i], y_t[i]) for i in range(len(y_s))])
    intra = 1 - np.mean([np_pearson(y_s[:, c], y_t[:, c]) for c in range(y_s.shape[1])])
    return tau ** 2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize('beta, gamma, tau', [(1.0, 1.0, 4.0), (2.0, 0.5, 1.0)])
def test_dist_value_and_gradient_match_the_formula(beta, gamma, tau):
    z_s, z_t = RNG.normal(0, 3, (6, 5)), RNG.normal(0, 3, (6, 5))
    value, grad = value_and_grad(DIST(beta, gamma, tau), z_s, z_t)
    assert value == pytest.approx(np_dist(z_s, z_t, beta, gamma, tau), rel=1e-9)
    np.testing.assert_allclose(grad, numeric_grad(lambda z: np_dist(z, z_t, beta, gamma, tau), z_s),
                               rtol=1e-5, atol=1e-8)


def test_dist_is_zero_for_identical_logits():
    """Zero but for the official eps = 1e-8 in the correlation's denominator: with identical inputs each
    row (or column) of centred probabilities y correlates as |y|^2 / (|y|^2 + eps), so the loss is the
    mean of eps / (|y|^2 + eps) over rows plus that over columns (below 1e-6 for these logits; other draws
    of the same size reach 2.4e-6, so the draw is fixed)."""
    z_t = torch.randn(8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = z_t.softmax(dim=1)

    def gap(m):
        squares = (m - m.mean(dim=1, keepdim=True)).pow(2).sum(1)
        return (1e-8 / (squares + 1e-8)).mean()
    value = float(DIST(1, 1, 1)(z_t, z_t))
    assert value == pytest.approx(0, abs=1e-6)
    assert value == pytest.approx(float(gap(y) + gap(y.t())), rel=1e-6)


# ---------------------------------------------------------------------------------------------- HCL

def np_pool(x, size):
    """Average pooling of (N, C, H, W) to size x size by explicit blocks (H divisible by size)."""
    n, c, h, w = x.shape
    bh, bw = h // size, w // size
    out = np.zeros((n, c, size, size))
    for i in range(size):
        for j in range(size):
            out[:, :, i, j] = x[:, :, i * bh:(i + 1) * bh, j * bw:(j + 1) * bw].mean(axis=(2, 3))
    return out


def np_hcl(fs_list, ft_list):
    total = 0.0
    for fs, ft in zip(fs_list, ft_list):
        terms, weights, w = [np.mean((fs - ft) ** 2)], [1.0], 1.0
        for size in (4, 2, 1):
            if size < fs.shape[2]:
                w /= 2
                terms.append(np.mean((np_pool(fs, size) - np_pool(ft, size)) ** 2))
                weights.append(w)
        total += np.dot(terms, weights) / np.sum(weights)
    return total


def test_hcl_value_and_gradient_match_the_formula():
    shapes = [(2, 3, 8, 8), (2, 2, 4, 4), (2, 2, 2, 2), (2, 4, 1, 1)]
    fs = [RNG.normal(size=s) for s in shapes]
    ft = [RNG.normal(size=s) for s in shapes]
    # weights per level: 8x8 uses 4, 2, 1 (1/2, 1/4, 1/8); 4x4 uses 2, 1 (1/2, 1/4); 2x2 uses 1; 1x1 none
    assert float(hcl_loss([torch.tensor(f) for f in fs], [torch.tensor(f) for f in ft])) == pytest.approx(
        np_hcl(fs, ft), rel=1e-10)
    for level in range(len(shapes)):
        def reference(x):
            return np_hcl(fs[:level] + [x] + fs[level + 1:], ft)

        def under_test(x):
            return hcl_loss([torch.tensor(f) for f in fs[:level]] + [x] + [torch.tensor(f) for f in fs[level + 1:]],
                            [torch.tensor(f) for f in ft])
        _, grad = value_and_grad(under_test, fs[level])
        np.testing.assert_allclose(grad, numeric_grad(reference, fs[level]), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------- OFD

def test_ofd_margin_is_the_mean_of_the_negative_part_of_the_bn_output():
    bn = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 1.0, 0.3, 0.0]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 3.5, 0.2, -0.7]))
    margins = ofd_margin(bn).numpy()
    for k, (s, m) in enumerate(zip([1.0, 2.0, 0.5], [0.0, 1.0, -1.0])):
        expected = truncnorm.mean(-np.inf, (0 - m) / s, loc=m, scale=s)  # E[X | X < 0], X ~ N(m, s^2)
        assert margins[k] == pytest.approx(expected, rel=1e-6)
    assert margins[3] == pytest.approx(-3.0)  # P(X < 0) = Phi(-3.5) < 1e-3: -3 s
    assert margins[4] == pytest.approx(truncnorm.mean(-np.inf, -0.2 / 0.3, loc=0.2, scale=0.3), rel=1e-6)
    assert margins[5] == pytest.approx(-0.7)  # zero scale: a point mass at the bias


def np_partial_l2(s, t, m):
    """The paper's rule: target T = max(t, m); no loss where s <= T <= 0, else (s - T)^2."""
    target = np.maximum(t, m)
    loss = np.where((s <= target) & (target <= 0), 0.0, (s - target) ** 2)
    return loss.sum() / s.shape[0]


def test_ofd_partial_l2_value_and_gradient_match_the_formula():
    margin = np.array([-0.5, -0.2, -1.0]).reshape(1, 3, 1, 1)
    s, t = RNG.normal(0, 1, (4, 3, 5, 5)), RNG.normal(0, 1, (4, 3, 5, 5))
    value, grad = value_and_grad(ofd_feat_loss, s, t, margin)
    assert value == pytest.approx(np_partial_l2(s, t, margin), rel=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda x: np_partial_l2(x, t, margin), s), rtol=1e-6, atol=1e-8)


def build_method(name, model_t, model_s, *flags, prepare_teacher=None):
    """The method for a pair of freshly initialised networks, with the probe train_student.py runs."""
    args = train_student.parse_args(['--path_t', f'{model_t}.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--distill', name, *flags])
    torch.manual_seed(0)
    teacher = build_model(model_t, 100, 'cifar100', '--model_t').eval()
    if prepare_teacher:
        prepare_teacher(teacher)
    student = build_model(model_s, 100, 'cifar100', '--model_s')
    probe_s, probe_t = probe_networks(student, teacher, DISTILLERS[name].preact, 32)
    return DISTILLERS[name](args, student, teacher, probe_s, probe_t, None), student, teacher


def outputs(method, student, teacher, images):
    """The student's outputs and the teacher's as the engine computes them for the method."""
    out_t = run_teacher(teacher, SimpleNamespace(images=images), method.teacher_request())
    return method.run_student(student, SimpleNamespace(images=images)), out_t


def randomise_bn(net):
    """Random BN scales and shifts, so that the margins differ from channel to channel."""
    with torch.no_grad():
        for bn in net.get_bn_before_relu():
            bn.weight.copy_(torch.randn(bn.num_features) * 0.5)
            bn.bias.copy_(torch.randn(bn.num_features))


def test_ofd_loss_of_a_real_pair_matches_the_formula():
    method, student, teacher = build_method('ofd', 'resnet32x4', 'ShuffleV1', prepare_teacher=randomise_bn)
    method.eval()
    student.eval()
    out_s, out_t = outputs(method, student, teacher, torch.randn(3, 3, 32, 32))
    bns = teacher.get_bn_before_relu()
    expected = 0.0
    for i, (f_s, f_t, bn) in enumerate(zip(out_s.feats[1:-1], out_t.feats[1:-1], bns)):
        s = method.connectors.connectors[i](f_s).detach().double().numpy()
        t = np_pool(f_t.double().numpy(), s.shape[-1]) if f_t.shape[-1] != s.shape[-1] else f_t.double().numpy()
        scale, shift = bn.weight.detach().abs().double().numpy(), bn.bias.detach().double().numpy()
        negative = truncnorm.mean(-np.inf, -shift / scale, loc=shift, scale=scale)
        margin = np.where(norm.cdf(-shift / scale) > 1e-3, negative, -3 * scale)
        expected += np_partial_l2(s, t, margin.reshape(1, -1, 1, 1)) / 2 ** (2 - i)
    assert float(method.method_loss(out_s, out_t, None, 1).detach()) == pytest.approx(expected, rel=1e-4)
    assert method.beta == 0.001 and method.gamma == 1.0 and method.alpha == 0.0


# ---------------------------------------------------------------------------------------------- warm-ups

@pytest.mark.parametrize('name', ['dkd', 'reviewkd'])
def test_warm_up_is_linear_over_20_one_based_epochs(name):
    method, student, teacher = build_method(name, 'resnet32x4', 'resnet8x4')
    assert [method.ramp(epoch) for epoch in (1, 10, 20, 30)] == [0.05, 0.5, 1.0, 1.0]
    out_s, out_t = outputs(method, student, teacher, torch.randn(4, 3, 32, 32))
    batch = type('Batch', (), {'targets': torch.tensor([0, 1, 2, 3])})
    with torch.no_grad():
        term = {epoch: float(method.losses(out_s, out_t, batch, epoch)[name]) for epoch in (1, 10, 20, 30)}
    assert term[20] == term[30]
    assert term[10] == pytest.approx(0.5 * term[30], rel=1e-5)
    assert term[1] == pytest.approx(0.05 * term[30], rel=1e-5)


def test_warm_up_of_zero_epochs_is_no_warm_up():
    method, _, _ = build_method('dkd', 'resnet32x4', 'resnet8x4', '--dkd_warmup', '0')
    assert method.ramp(1) == 1.0


# ---------------------------------------------------------------------------------------------- modules

# dvlab-research/ReviewKD's CIFAR table (build_review_kd), deepest level first: (student channels, teacher
# channels, teacher size); the fusion width is min(512, student's pooled channels).
REVIEW_TABLE = {
    ('resnet32x4', 'resnet8x4'): ([256, 256, 128, 64], [256, 256, 128, 64], [1, 8, 16, 32], 256),
    ('wrn_40_2', 'wrn_16_2'): ([128, 128, 64, 32], [128, 128, 64, 32], [1, 8, 16, 32], 128),
    ('resnet32x4', 'ShuffleV1'): ([960, 960, 480, 240], [256, 256, 128, 64], [1, 8, 16, 32], 512),
    ('vgg13', 'MobileNetV2'): ([1280, 160, 48, 16, 12], [512, 512, 512, 256, 128], [1, 4, 4, 8, 16], 512),
}


@pytest.mark.parametrize('pair', list(REVIEW_TABLE), ids=lambda p: f'{p[0]}-{p[1]}')
def test_reviewkd_modules_follow_the_probe_shapes(pair):
    in_channels, out_channels, out_sizes, mid = REVIEW_TABLE[pair]
    method, student, teacher = build_method('reviewkd', *pair)
    assert [abf.conv1[0].in_channels for abf in method.abfs] == in_channels
    assert [abf.conv2[0].out_channels for abf in method.abfs] == out_channels
    assert {abf.conv1[0].out_channels for abf in method.abfs} == {mid}
    assert [abf.att_conv is None for abf in method.abfs] == [True] + [False] * (len(in_channels) - 1)
    assert method.out_sizes == [(s, s) for s in out_sizes]
    out_s, out_t = outputs(method, student, teacher, torch.randn(2, 3, 32, 32))
    predictions = method.review(out_s.feats)
    targets = [*out_t.feats[1:-1], out_t.feats[-1][:, :, None, None]]
    assert [p.shape for p in predictions] == [t.shape for t in targets]
    assert method.beta == 5.0 and method.warmup == 20


def test_reviewkd_reads_the_teachers_pre_relu_maps_and_the_students_post_relu_maps():
    method, student, teacher = build_method('reviewkd', 'resnet32x4', 'resnet8x4')
    images = torch.randn(2, 3, 32, 32)
    out_s, out_t = outputs(method, student, teacher, images)
    with torch.no_grad():
        pre = teacher(images, is_feat=True, preact=True)[0]
    assert all(torch.equal(a, b) for a, b in zip(out_t.feats, pre))
    assert any((f < 0).any() for f in out_t.feats[1:-1])
    assert all((f >= 0).all() for f in out_s.feats[1:-1])
    assert teacher(images).shape == (2, 100)  # logits alone are unaffected


@pytest.mark.parametrize('pair, s_channels, t_channels', [
    (('resnet32x4', 'resnet8x4'), [64, 128, 256], [64, 128, 256]),
    (('wrn_40_2', 'wrn_16_2'), [32, 64, 128], [32, 64, 128]),
    (('resnet32x4', 'ShuffleV1'), [240, 480, 960], [64, 128, 256]),
    (('vgg13', 'MobileNetV2'), [12, 16, 48, 160], [128, 256, 512, 512]),
    (('vgg13', 'resnet8x4'), [64, 128, 256], [256, 512, 512]),  # deepest stages paired
], ids=lambda p: f'{p[0]}-{p[1]}' if isinstance(p, tuple) else None)
def test_ofd_modules_for_real_pairs(pair, s_channels, t_channels):
    method, student, teacher = build_method('ofd', *pair)
    connectors = method.connectors.connectors
    assert [c[0].in_channels for c in connectors] == s_channels
    assert [c[0].out_channels for c in connectors] == t_channels
    assert [getattr(method, f'margin{i}').shape[1] for i in range(len(connectors))] == t_channels
    assert all((getattr(method, f'margin{i}') < 0).all() for i in range(len(connectors)))
    out_s, out_t = outputs(method, student, teacher, torch.randn(2, 3, 32, 32))
    assert torch.isfinite(method.method_loss(out_s, out_t, None, 1))
    assert not any(key.startswith('margin') for key in method.state_dict())  # rebuilt from the teacher


# ---------------------------------------------------------------------------------------------- defaults

def parse(name, model_t, model_s, *flags):
    return train_student.parse_args(['--path_t', f'{model_t}.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--distill', name, *flags])


@pytest.mark.parametrize('pair, beta', [
    (('resnet32x4', 'resnet8x4'), 8.0), (('resnet32x4', 'ShuffleV2'), 8.0), (('wrn_40_2', 'wrn_16_2'), 6.0),
    (('wrn_40_2', 'wrn_40_1'), 6.0), (('vgg13', 'vgg8'), 6.0), (('vgg13', 'MobileNetV2'), 6.0),
    (('resnet56', 'resnet20'), 2.0), (('resnet110', 'resnet32'), 2.0)])
def test_dkd_defaults_are_mdistillers_per_pair(pair, beta):
    args = parse('dkd', *pair)
    assert (args.gamma, args.alpha, args.beta) == (1.0, 0.0, 1.0)
    assert (args.dkd_alpha, args.dkd_beta, args.dkd_T, args.dkd_warmup) == (1.0, beta, 4.0, 20)


def test_given_values_win_and_imagenet_has_its_own_defaults():
    assert parse('dkd', 'resnet56', 'resnet20', '--dkd_beta', '3').dkd_beta == 3.0
    args = parse('dkd', 'ResNet34', 'ResNet18', '--dataset', 'imagenet')
    assert (args.dkd_beta, args.dkd_T, args.dkd_warmup) == (0.5, 1.0, 1)
    assert parse('dkd', 'ResNet50', 'MobileNetV1', '--dataset', 'imagenet').dkd_beta == 2.0
    assert parse('dist', 'resnet32x4', 'resnet8x4').dist_tau == 4.0
    assert parse('dist', 'ResNet34', 'ResNet18', '--dataset', 'imagenet').dist_tau == 1.0
    assert parse('reviewkd', 'ResNet50', 'MobileNetV1', '--dataset', 'imagenet').beta == 8.0
    assert parse('reviewkd', 'ResNet34', 'ResNet18', '--dataset', 'imagenet').reviewkd_warmup == 1
    assert parse('ofd', 'ResNet34', 'ResNet18', '--dataset', 'imagenet').beta == 1e-4
    assert parse('ofd', 'resnet32x4', 'resnet8x4', '-b', '0.01').beta == 0.01


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize('name, flags, message', [
    ('dkd', ['--dkd_T', '0'], '--dkd_T must be positive'),
    ('dkd', ['--dkd_T', '-4'], '--dkd_T must be positive'),
    ('dkd', ['--dkd_alpha', '-1'], '--dkd_alpha cannot be negative'),
    ('dkd', ['--dkd_beta', '-8'], '--dkd_beta cannot be negative'),
    ('dkd', ['--dkd_warmup', '-1'], '--dkd_warmup cannot be negative'),
    ('dist', ['--dist_tau', '0'], '--dist_tau must be positive'),
    ('dist', ['--dist_beta', '-1'], '--dist_beta cannot be negative'),
    ('dist', ['--dist_gamma', '-1'], '--dist_gamma cannot be negative'),
    ('dist', ['--batch_size', '1'], 'needs --batch_size 2 or more'),
    ('rkd', ['--batch_size', '1'], 'needs --batch_size 2 or more'),
    ('reviewkd', ['--reviewkd_warmup', '-5'], '--reviewkd_warmup cannot be negative'),
])
def test_undefined_settings_are_refused(name, flags, message):
    with pytest.raises(KDZooError, match=message):
        parse(name, 'resnet32x4', 'resnet8x4', *flags)


@pytest.mark.parametrize('model_t, message', [('ShuffleV1', 'no BN right before its stage ReLUs'),
                                              ('MobileNetV2', 'has no ReLU after its stages')])
def test_ofd_refuses_teachers_without_bn_before_relu(model_t, message):
    with pytest.raises(KDZooError, match=message):
        build_method('ofd', model_t, 'resnet8')


def test_bad_flag_is_one_line_and_exit_status_2(capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(train_student.main, ['--path_t', 'x/resnet8_vanilla/resnet8_best.pth', '--distill', 'dkd',
                                     '--dkd_T', '0'])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ['error: --dkd_T must be positive, got 0']
