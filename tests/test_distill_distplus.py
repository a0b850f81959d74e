"""DIST+ (``--distill distplus``) against an independent float64 transcription of torchdistill's DISTPlusLoss
(torchdistill/losses/mid_level.py), a few values worked out by hand, its defaults and its refusals."""
import pytest
import torch
import torch.nn.functional as F

import train_student
from distiller_zoo import DISTILLERS
from distiller_zoo.DIST import DIST
from distiller_zoo.DISTPlus import DISTPlus
from distiller_zoo.teacher import probe_networks
from helper.errors import KDZooError
from models.features import NetOutput
from models.registry import build_model

from conftest import small_digits_fixture

# The digits runs here train on the first 192 training and 64 test digits: they compare runs with each
# other, which does not need the whole data, and the whole digits cost minutes of CI per pack.
small_digits = small_digits_fixture(192, 64)


def reference(z_s, z_t, f_s, f_t, beta, gamma, iota, kappa, tau, eps=1e-8):
    """torchdistill's DISTPlusLoss.forward step by step: DISTLoss (centred cosine_similarity), then
    channel_relation (+ the mean correlation) and spatial_relation (1 - mean correlation across the batch)."""
    def corr(a, b):  # DISTLoss.pearson_correlation on rows
        return F.cosine_similarity(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1), eps=eps)

    def inter(a, b):
        return 1 - corr(a, b).mean()

    y_s, y_t = (z_s / tau).softmax(dim=1), (z_t / tau).softmax(dim=1)
    dist = beta * tau ** 2 * inter(y_s, y_t) + gamma * tau ** 2 * inter(y_s.transpose(0, 1), y_t.transpose(0, 1))
    cs, ct = f_s - f_s.mean(dim=1, keepdim=True), f_t - f_t.mean(dim=1, keepdim=True)
    channel = ((cs * ct).sum(1) / (torch.sqrt((cs ** 2).sum(1) * (ct ** 2).sum(1)) + eps)).mean()
    spatial = inter(f_s.sum(1).flatten(1).transpose(0, 1), f_t.sum(1).flatten(1).transpose(0, 1))
    return dist, channel, spatial


def draw(seed, n=6, classes=7, shape=(5, 3, 4)):
    g = torch.Generator().manual_seed(seed)
    z_s, z_t = (3 * torch.randn(n, classes, generator=g, dtype=torch.float64) for _ in range(2))
    f_s, f_t = (torch.randn(n, *shape, generator=g, dtype=torch.float64).exp() for _ in range(2))  # > 0, as ReLU maps
    return z_s, z_t, f_s, f_t


@pytest.mark.parametrize('weights', [(2.0, 2.0, 1.0, 1.0, 1.0), (1.0, 0.5, 3.0, 0.7, 4.0)])
@pytest.mark.parametrize('channel', ['code', 'paper'])
def test_value_and_gradients_match_torchdistill(weights, channel):
    beta, gamma, iota, kappa, tau = weights
    z_s, z_t, f_s, f_t = draw(1)
    leaves = [z_s.requires_grad_(), f_s.requires_grad_()]
    ours = DISTPlus(beta, gamma, iota, kappa, tau, channel)(z_s, z_t, f_s, f_t)
    grads = torch.autograd.grad(ours, leaves)
    dist, corr, spatial = reference(z_s, z_t, f_s, f_t, beta, gamma, iota, kappa, tau)
    theirs = dist + iota * (corr if channel == 'code' else 1 - corr) + kappa * spatial
    expected = torch.autograd.grad(theirs, leaves)
    assert abs(ours.item() - theirs.item()) < 1e-12
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


def test_code_channel_term_is_the_correlation_itself():
    """Identical logits and maps: DIST and the spatial relation vanish, the channel correlation is 1 (but for
    the 1e-8 in its denominator), so the official loss is iota and the paper's form 0. Maps of opposite sign:
    the channel correlation is -1 and the spatial one too (1 - (-1) = 2 in the loss)."""
    z, _, f, _ = draw(2)
    code = DISTPlus(2.0, 2.0, 3.0, 0.5, 1.0, 'code')
    paper = DISTPlus(2.0, 2.0, 3.0, 0.5, 1.0, 'paper')
    assert code(z, z, f, f).item() == pytest.approx(3.0, abs=1e-6)
    assert paper(z, z, f, f).item() == pytest.approx(0.0, abs=1e-6)
    assert code(z, z, -f, f).item() == pytest.approx(3.0 * -1 + 0.5 * 2, abs=1e-6)
    assert paper(z, z, -f, f).item() == pytest.approx(3.0 * 2 + 0.5 * 2, abs=1e-6)


def test_dist_part_is_dists_loss_up_to_the_eps_placement():
    """With the feature weights at 0 DIST+ is DIST (the hunto/DIST_KD criterion, eps in another place)."""
    z_s, z_t, f_s, f_t = draw(3)
    assert DISTPlus(1.0, 1.0, 0.0, 0.0, 4.0)(z_s, z_t, f_s, f_t).item() == pytest.approx(
        DIST(1.0, 1.0, 4.0)(z_s, z_t).item(), rel=1e-6)


def test_half_inputs_give_an_fp32_loss():
    z_s, z_t, f_s, f_t = (x.half() for x in draw(4))
    loss = DISTPlus(2.0, 2.0, 1.0, 1.0, 1.0)(z_s, z_t, f_s, f_t)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(DISTPlus(2.0, 2.0, 1.0, 1.0, 1.0)(*(x.float() for x in (z_s, z_t, f_s, f_t)))
                                        .item(), rel=1e-6)


def parse(model_t, model_s, *flags):
    return train_student.parse_args(['--path_t', f'{model_t}.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--distill', 'distplus', *flags])


@pytest.mark.parametrize('flags', [(), ('--dataset', 'imagenet')])
def test_defaults_are_torchdistills_config(flags):
    model_t, model_s = ('ResNet34', 'ResNet18') if flags else ('resnet32x4', 'resnet8x4')
    args = parse(model_t, model_s, *flags)
    assert (args.gamma, args.alpha, args.beta) == (1.0, 0.0, 2.0)
    assert (args.distplus_beta, args.distplus_gamma, args.distplus_iota, args.distplus_kappa,
            args.distplus_tau, args.distplus_channel) == (2.0, 2.0, 1.0, 1.0, 1.0, 'code')


@pytest.mark.parametrize('flags, message', [
    (['--distplus_tau', '0'], '--distplus_tau must be positive'),
    (['--distplus_beta', '-1'], '--distplus_beta cannot be negative'),
    (['--distplus_gamma', '-1'], '--distplus_gamma cannot be negative'),
    (['--distplus_iota', '-1'], '--distplus_iota cannot be negative'),
    (['--distplus_kappa', '-1'], '--distplus_kappa cannot be negative'),
    (['--batch_size', '1'], 'needs --batch_size 2 or more'),
])
def test_undefined_settings_are_refused(flags, message):
    with pytest.raises(KDZooError, match=message):
        parse('resnet32x4', 'resnet8x4', *flags)


def build(model_t, model_s):
    args = parse(model_t, model_s)
    torch.manual_seed(0)
    teacher = build_model(model_t, 100, 'cifar100', '--model_t').eval()
    student = build_model(model_s, 100, 'cifar100', '--model_s')
    probe_s, probe_t = probe_networks(student, teacher, False, 32)
    return DISTILLERS['distplus'](args, student, teacher, probe_s, probe_t, None), student, teacher


def test_reads_the_last_stage_maps():
    method, student, teacher = build('resnet32x4', 'resnet8x4')
    images = torch.randn(3, 3, 32, 32)
    feats_s, z_s = student(images, is_feat=True)
    with torch.no_grad():
        feats_t, z_t = teacher(images, is_feat=True)
    assert feats_s[-2].shape == (3, 256, 8, 8)
    out_s, out_t = NetOutput(z_s, feats_s), NetOutput(z_t, feats_t)
    expected = method.criterion(z_s, z_t, feats_s[-2], feats_t[-2])
    assert torch.equal(method.method_loss(out_s, out_t, None, 1), expected)


def test_maps_of_other_shapes_are_refused():
    with pytest.raises(KDZooError, match='must have one \\(C, H, W\\) shape'):
        build('resnet32x4', 'ShuffleV1')


def test_a_position_constant_across_channels():
    """Where the student's map is constant across channels (a dead position of a ReLU map) the correlation is 0
    in both; torchdistill's gradient there is NaN (sqrt of 0), this one's finite (the norm's is 0 at 0). The
    value and every other gradient entry agree."""
    z_s, z_t, f_s, f_t = draw(5)
    f_s[0, :, 1, 2], f_s[1, :, 0, 0] = 0.0, 0.5
    f_s.requires_grad_()
    ours = DISTPlus(2.0, 2.0, 1.0, 1.0, 1.0)(z_s, z_t, f_s, f_t)
    dist, corr, spatial = reference(z_s, z_t, f_s, f_t, 2.0, 2.0, 1.0, 1.0, 1.0)
    theirs = dist + corr + spatial
    assert abs(ours.item() - theirs.item()) < 1e-12
    (g,), (e,) = torch.autograd.grad(ours, [f_s]), torch.autograd.grad(theirs, [f_s])
    dead = torch.zeros_like(g, dtype=torch.bool)
    dead[0, :, 1, 2] = dead[1, :, 0, 0] = True
    assert torch.isfinite(g).all() and torch.isnan(e[dead]).all()
    torch.testing.assert_close(g[~dead], e[~dead], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_pack_with_kd_equals_the_single_runs(tmp_path):
    from test_pack import assert_same_runs, random_teacher, single_runs
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5',
              '--learning_rate', '0.002']
    states = train_student.main([*common, '--model_s', 'resnet8', '--distill', 'kd,distplus',
                                 '--save_root', str(tmp_path / 'pack')])
    assert sorted(states) == ['resnet8 distplus', 'resnet8 kd']
    single_runs(common, [('resnet8', 'kd'), ('resnet8', 'distplus')], tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
