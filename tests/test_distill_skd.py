"""SKD (``--distill skd``) against an independent float64 transcription of torchdistill's SKDInstanceLoss and
SKDDirectionLoss (torchdistill/losses/mid_level.py), values worked out by hand, its defaults and refusals."""
import math

import pytest
import torch
import torch.nn.functional as F

import train_student
from distiller_zoo import DISTILLERS
from distiller_zoo.SKD import skd_direction_loss, skd_instance_loss
from helper.errors import KDZooError
from models.features import NetOutput

from conftest import small_digits_fixture

# The digits runs here train on the first 192 training and 64 test digits: they compare runs with each
# other, which does not need the whole data, and the whole digits cost minutes of CI per pack.
small_digits = small_digits_fixture(192, 64)


def reference_instance(z_s, z_t, temperature):
    """SKDInstanceLoss.forward: kl_div(log_softmax(s / T), softmax(t / T), 'batchmean')."""
    return F.kl_div(torch.log_softmax(z_s / temperature, dim=1), torch.softmax(z_t / temperature, dim=1),
                    reduction='batchmean')


def reference_direction(z_s, z_t, tikhonov):
    """SKDDirectionLoss.forward: Gram matrices of the normalised rows, torch.cov of the difference's transpose
    plus lambda I, its inverse from the Cholesky factor, the einsum'd Mahalanobis forms, sqrt, mean."""
    g_s, g_t = F.normalize(z_s, p=2, dim=1), F.normalize(z_t, p=2, dim=1)
    d = torch.mm(g_s, g_s.t()) - torch.mm(g_t, g_t.t())
    cov = torch.cov(d.t()) + tikhonov * torch.eye(d.size(1), dtype=d.dtype)
    inv = torch.cholesky_inverse(torch.linalg.cholesky(cov))
    return torch.sqrt(torch.einsum('bi,ij,bj->b', d, inv, d)).mean()


def draw(seed, n=8, classes=10):
    g = torch.Generator().manual_seed(seed)
    return [3 * torch.randn(n, classes, generator=g, dtype=torch.float64) for _ in range(2)]


def build(*flags):
    args = parse('resnet32x4', 'resnet8x4', *flags)
    return DISTILLERS['skd'](args, None, None, None, None, None)


@pytest.mark.parametrize('temperature, tikhonov, weights', [(4.0, 0.1, (1.0, 1.0)), (1.5, 0.02, (0.3, 2.0))])
def test_value_and_gradient_match_torchdistill(temperature, tikhonov, weights):
    z_s, z_t = draw(1)
    z_s.requires_grad_()
    flags = ['--skd_T', str(temperature), '--skd_tikhonov', str(tikhonov), '--skd_instance', str(weights[0]),
             '--skd_direction', str(weights[1])]
    ours = build(*flags).method_loss(NetOutput(z_s), NetOutput(z_t), None, 1)
    theirs = weights[0] * reference_instance(z_s, z_t, temperature) + weights[1] * reference_direction(z_s, z_t,
                                                                                                        tikhonov)
    assert ours.dtype == torch.float64
    assert abs(ours.item() - theirs.item()) < 1e-12
    (g,), (e,) = torch.autograd.grad(ours, [z_s]), torch.autograd.grad(theirs, [z_s])
    torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


@pytest.mark.parametrize('n', [2, 3, 64])
def test_each_term_matches_torchdistill(n):
    z_s, z_t = draw(n, n=n, classes=100)
    assert abs(skd_instance_loss(z_s, z_t, 4.0).item() - reference_instance(z_s, z_t, 4.0).item()) < 1e-12
    assert abs(skd_direction_loss(z_s, z_t, 0.1).item() - reference_direction(z_s, z_t, 0.1).item()) < 1e-12


def test_direction_of_two_samples_by_hand():
    """B = 2: D = [[0, d], [d, 0]] with d the student's cosine minus the teacher's; the covariance of its
    columns is d^2/2 [[1, -1], [-1, 1]], so each row's squared length is d^2 (d^2/2 + l) / (l (l + d^2))."""
    z_s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # cosine 0
    z_t = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)  # cosine 1/sqrt(2)
    d2, lam = 0.5, 0.1
    assert skd_direction_loss(z_s, z_t, lam).item() == pytest.approx(
        math.sqrt(d2 * (d2 / 2 + lam) / (lam * (lam + d2))), rel=1e-12)  # sqrt(0.175 / 0.06)


def test_instance_by_hand_and_identical_logits():
    """Two classes at T 1: KL((1/2, 1/2) || softmax(0, log 3) = (1/4, 3/4)) = log 2 - (log 3)/2 (no T^2
    factor at T 4 either); identical logits give 0 for both terms."""
    z_s = torch.tensor([[0.0, math.log(3)]], dtype=torch.float64)
    z_t = torch.zeros(1, 2, dtype=torch.float64)
    assert skd_instance_loss(z_s, z_t, 1.0).item() == pytest.approx(math.log(2) - math.log(3) / 2, rel=1e-12)
    z_s4 = 4 * z_s
    assert skd_instance_loss(z_s4, z_t, 4.0).item() == pytest.approx(math.log(2) - math.log(3) / 2, rel=1e-12)
    z, _ = draw(3)
    assert skd_instance_loss(z, z, 4.0).item() == pytest.approx(0.0, abs=1e-15)
    assert skd_direction_loss(z, z, 0.1).item() == 0.0


def test_a_batch_of_one_has_no_direction_term():
    z_s, z_t = draw(4, n=1)
    z_s.requires_grad_()
    loss = skd_direction_loss(z_s, z_t, 0.1)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z_s.grad, torch.zeros_like(z_s))


def test_half_inputs_give_an_fp32_loss():
    z_s, z_t = (z.half() for z in draw(5))
    method = build()
    loss = method.method_loss(NetOutput(z_s), NetOutput(z_t), None, 1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(method.method_loss(NetOutput(z_s.float()), NetOutput(z_t.float()), None, 1)
                                        .item(), rel=1e-6)


def parse(model_t, model_s, *flags):
    return train_student.parse_args(['--path_t', f'{model_t}.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--distill', 'skd', *flags])


@pytest.mark.parametrize('flags', [(), ('--dataset', 'imagenet')])
def test_defaults_are_torchdistills_config(flags):
    model_t, model_s = ('ResNet34', 'ResNet18') if flags else ('resnet32x4', 'resnet8x4')
    args = parse(model_t, model_s, *flags)
    assert (args.gamma, args.alpha, args.beta) == (0.0, 0.0, 1.0)
    assert (args.skd_instance, args.skd_direction, args.skd_T, args.skd_tikhonov) == (1.0, 1.0, 4.0, 0.1)


@pytest.mark.parametrize('flags, message', [
    (['--skd_T', '0'], '--skd_T must be positive'),
    (['--skd_tikhonov', '0'], '--skd_tikhonov must be positive'),
    (['--skd_instance', '-1'], '--skd_instance cannot be negative'),
    (['--skd_direction', '-1'], '--skd_direction cannot be negative'),
    (['--batch_size', '1'], 'needs --batch_size 2 or more'),
])
def test_undefined_settings_are_refused(flags, message):
    with pytest.raises(KDZooError, match=message):
        parse('resnet32x4', 'resnet8x4', *flags)


@pytest.mark.slow
def test_pack_with_kd_equals_the_single_runs(tmp_path):
    from test_pack import assert_same_runs, random_teacher, single_runs
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5',
              '--learning_rate', '0.002']
    states = train_student.main([*common, '--model_s', 'resnet8', '--distill', 'kd,skd',
                                 '--save_root', str(tmp_path / 'pack')])
    assert sorted(states) == ['resnet8 kd', 'resnet8 skd']
    single_runs(common, [('resnet8', 'kd'), ('resnet8', 'skd')], tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
