"""NORM (distiller_zoo/NORM.py): its loss, epoch multiplier and logit transform against independent
computations, the FT on real pairs, folding the FT into the classifier, NORM's CLI spellings, norm_crd
on a CRD batch, and the one-line errors."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import train_student
from distiller_zoo.teacher import probe_networks
from models.features import run_network
from dataset.batches import Batch, DataBundle
from distiller_zoo import DISTILLERS
from distiller_zoo.NORM import fold_norm_checkpoint, norm_epoch_weight, norm_logits, norm_loss
from helper.errors import KDZooError
from engine.objective import DistillObjective
from models import model_dict
from distiller_zoo.deploy import build_deployed


def parse(*argv, model_t='resnet32x4'):
    return train_student.parse_args(['--path_t', f'somewhere/{model_t}_vanilla/{model_t}_best.pth', *argv])


def make(name, model_t, model_s, *extra, num_classes=100, num_train=64, probe_t=None):
    """(args, student, teacher, method) built as train_student.build_objective does, on the CPU."""
    args = parse('--distill', name, '--model_s', model_s, *extra, model_t=model_t)
    teacher = model_dict[model_t](num_classes=num_classes).eval()
    student = model_dict[model_s](num_classes=num_classes)
    probe_s, probe_t_real = probe_networks(student, teacher, DISTILLERS[name].preact,
                                           224 if args.dataset == 'imagenet' else 32)
    data = DataBundle(train=None, val=None, num_classes=num_classes, num_train=num_train, train_labels=None)
    method = DISTILLERS[name](args, student, teacher, probe_s, probe_t or probe_t_real, data)
    return args, student, teacher, method


def batch_of(size, num_classes=100, num_train=64, nce_k=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    contrast = None
    indices = torch.randperm(num_train, generator=gen)[:size]
    if nce_k is not None:
        negatives = torch.randint(0, num_train, (size, nce_k), generator=gen)
        contrast = torch.cat([indices[:, None], negatives], 1)
    return Batch(torch.randn(size, 3, 32, 32, generator=gen), torch.randint(0, num_classes, (size,), generator=gen),
                 indices, contrast)


# ---- the loss, the multiplier, the logit transform --------------------------------------------------------
def test_norm_loss_is_n_times_the_mse_to_the_tiled_and_max_pooled_teacher():
    gen = torch.Generator().manual_seed(1)
    n, c_t = 3, 2
    expanded = torch.randn(2, n * c_t, 2, 2, generator=gen, requires_grad=True)
    teacher = torch.randn(2, c_t, 4, 4, generator=gen)
    loss = norm_loss(expanded, teacher)

    pooled = torch.empty(2, c_t, 2, 2)  # 2x2 max-pooling written out
    for i in range(2):
        for j in range(2):
            pooled[:, :, i, j] = teacher[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].amax((2, 3))
    by_group = sum(((expanded[:, g * c_t:(g + 1) * c_t] - pooled) ** 2).mean() for g in range(n))
    assert torch.allclose(loss, by_group, atol=1e-6)
    tiled = pooled.repeat(1, n, 1, 1)
    loss.backward()
    analytic = 2 * n * (expanded.detach() - tiled) / expanded.numel()
    assert torch.allclose(expanded.grad, analytic, atol=1e-7)

    # by hand: every element 1 against a zero teacher gives N * 1
    assert float(norm_loss(torch.ones(1, 4, 1, 1), torch.zeros(1, 2, 1, 1))) == 2.0
    # a larger student map is max-pooled down to the teacher's (NORM's ImageNet branch)
    big = torch.arange(16.).reshape(1, 1, 4, 4)
    assert float(norm_loss(big, torch.zeros(1, 1, 2, 2))) == pytest.approx((5 ** 2 + 7 ** 2 + 13 ** 2 + 15 ** 2) / 4)


def test_epoch_multiplier_follows_norms_loop():
    cifar = {1: 0.1, 9: 0.1, 10: 0.5, 19: 0.5, 20: 1.0, 179: 1.0, 180: 0.5, 209: 0.5, 210: 0.1, 240: 0.1, 241: 0.1}
    for epoch, weight in cifar.items():
        assert norm_epoch_weight(epoch, 'cifar100') == weight, epoch
        assert norm_epoch_weight(epoch, 'digits') == weight, epoch
    imagenet = {1: 0.1, 4: 0.1, 5: 0.5, 14: 0.5, 15: 0.9, 59: 0.9, 60: 0.5, 79: 0.5, 80: 0.1, 120: 0.1}
    for epoch, weight in imagenet.items():
        assert norm_epoch_weight(epoch, 'imagenet') == weight, epoch


def test_logit_normalisation_by_hand():
    logits = torch.tensor([[1., 2., 3., 4.], [0., 0., 0., 8.]])
    # row 1: mean 2.5, biased variance 1.25; row 2: mean 2, variance 12
    want = torch.tensor([[-1.5, -0.5, 0.5, 1.5], [-2., -2., -2., 6.]])
    want = want / torch.tensor([[math.sqrt(1.25 + 1e-7)], [math.sqrt(12 + 1e-7)]]) * 2.5
    assert torch.allclose(norm_logits(logits, 2.5), want, atol=1e-6)


def test_ce_and_kd_use_the_normalised_logits_unless_switched_off():
    for flags, transform in (((), lambda z: norm_logits(z, 2.5)), (('--no_logit_norm',), lambda z: z)):
        args, student, teacher, method = make('norm_kd', 'resnet20', 'resnet8', *flags, num_classes=10)
        batch = batch_of(4, num_classes=10)
        objective = DistillObjective(student, teacher, method).train()
        out = objective.step(batch, epoch=30)
        with torch.no_grad():
            z_t = transform(teacher(batch.images))
        z_s = transform(out.logits)
        assert torch.allclose(out.losses['ce'], 0.1 * F.cross_entropy(z_s, batch.targets), atol=1e-6)
        kl = F.kl_div(F.log_softmax(z_s / 4, 1), F.softmax(z_t / 4, 1), reduction='batchmean') * 16
        assert torch.allclose(out.losses['kd'], kl, atol=1e-5)


@pytest.mark.parametrize('flags', [(), ('--plain_ft',)])
def test_ce_only_student_with_one_ft_runs_no_teacher(flags):
    """NORM's "Student (w/ 1 default / plain FT)" rows: -r 1 -a 0 -b 0, the student with its FT on the labels."""
    args, student, teacher, method = make('norm', 'resnet20', 'resnet8', '-r', '1', '-a', '0', '-b', '0', *flags,
                                          num_classes=10)
    assert method.ft.residual == (not flags)
    teacher_calls = []
    teacher.register_forward_hook(lambda *_: teacher_calls.append(1))
    batch = batch_of(4, num_classes=10)
    objective = DistillObjective(student, teacher, method).train()
    out = objective.step(batch, epoch=30)
    assert teacher_calls == [] and set(out.losses) == {'ce'}
    assert out.logits.shape == (4, 10)  # the student's logits through its FT
    assert torch.allclose(out.losses['ce'], F.cross_entropy(norm_logits(out.logits, 2.5), batch.targets))
    out.losses['ce'].backward()
    assert method.ft.expand[0].weight.grad.abs().sum() > 0  # the FT trains with the student
    # with a KD or NORM term the teacher runs again
    _, student, teacher, method = make('norm', 'resnet20', 'resnet8', '-r', '1', '-a', '0', '-b', '1', num_classes=10)
    teacher.register_forward_hook(lambda *_: teacher_calls.append(1))
    DistillObjective(student, teacher, method).train().step(batch_of(4, num_classes=10), epoch=30)
    assert teacher_calls == [1]


def test_table_script_runs_the_ce_only_rows():
    import shlex
    import subprocess
    from conftest import REPO
    result = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'run_norm_tables.sh')], capture_output=True,
                            text=True, timeout=60,
                            env=dict(os.environ, DRY_RUN='1', PACK='0', PAIRS='resnet32x4:resnet8x4'))
    runs = [train_student.parse_args(shlex.split(line)[2:]) for line in result.stdout.splitlines()]
    ce_only = [(a.plain_ft, a.save_root) for a in runs if (a.distill, a.gamma, a.alpha, a.beta) == ('norm', 1, 0, 0)]
    assert sorted(ce_only) == [(False, './save'), (True, './save_plain_ft')]
    assert all(a.co_sponge == 8 for a in runs)


# ---- the FT on real pairs -----------------------------------------------------------------------------
@pytest.mark.parametrize('model_t, model_s, c_s, c_t, side', [
    ('resnet32x4', 'resnet8x4', 256, 256, 8),
    ('wrn_40_2', 'wrn_16_2', 128, 128, 8),
    ('vgg13', 'vgg8', 512, 512, 4),
    ('vgg13', 'MobileNetV2', 1280, 512, 2),   # teacher 4x4 max-pooled to 2x2
    ('resnet32x4', 'ShuffleV1', 960, 256, 4),  # teacher 8x8 max-pooled to 4x4
])
def test_feature_transform_shapes_on_real_pairs(model_t, model_s, c_s, c_t, side):
    args, student, teacher, method = make('norm', model_t, model_s)
    assert method.ft.expand[0].weight.shape == (8 * c_t, c_s, 1, 1)
    assert method.ft.contract[0].weight.shape == (c_s, 8 * c_t, 1, 1)
    assert method.ft.residual
    batch = batch_of(2)
    objective = DistillObjective(student, teacher, method).train()
    out = objective.step(batch, epoch=30)
    assert out.logits.shape == (2, 100) and set(out.losses) == {'ce', 'norm'}
    expanded, _, _ = method._through_ft(student, run_network(student, batch.images, True, False, True))
    assert expanded.shape == (2, 8 * c_t, side, side)
    sum(out.losses.values()).backward()
    assert method.ft.expand[0].weight.grad.abs().sum() > 0
    assert student.get_classifier().weight.grad.abs().sum() > 0


# ---- folding ------------------------------------------------------------------------------------------
def randomise_batch_norms(*modules):
    gen = torch.Generator().manual_seed(3)
    for module in modules:
        for bn in module.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                for tensor in (bn.weight.data, bn.bias.data, bn.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize('model_t, model_s, flags', [
    ('resnet32x4', 'resnet8x4', ()),
    ('resnet32x4', 'resnet8x4', ('--plain_ft',)),
    ('wrn_40_2', 'wrn_16_2', ('-s', '2')),
    ('vgg13', 'MobileNetV2', ('-s', '2')),
    ('resnet32x4', 'ShuffleV2', ('-s', '2')),
])
def test_folded_student_predicts_what_student_with_ft_does(model_t, model_s, flags):
    args, student, teacher, method = make('norm', model_t, model_s, *flags)
    randomise_batch_norms(student, method.ft)
    student.double().eval()
    method.double().eval()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        with_ft = method.predict(student, teacher, images)
        folded, meta = method.deployable(student, teacher)
        assert type(folded) is type(student) and not any('expand' in k for k in folded.state_dict())
        assert torch.allclose(folded.eval()(images), with_ft, rtol=0, atol=1e-9)
        assert not torch.allclose(student(images), with_ft, atol=1e-3)  # the FT does change the output
    assert meta['kind'] == 'norm' and meta['model'] == model_s
    assert meta['num_params'] == sum(p.numel() for p in student.parameters())
    assert meta['num_params_trained'] == meta['num_params'] + sum(p.numel() for p in method.ft.parameters())
    rebuilt = build_deployed(meta)
    rebuilt.load_state_dict(folded.state_dict())
    # the checkpoint entries alone fold to the same weights (what a tool reading <s>_best.pth would do)
    again = fold_norm_checkpoint(student.state_dict(), method.checkpoint_extras()['norm_ft'])
    for key, value in folded.state_dict().items():
        assert torch.equal(again[key], value), key


@pytest.mark.slow
def test_one_epoch_run_deploys_a_plain_student_that_eval_reads(tmp_path):
    import tools.eval
    teacher_dir = tmp_path / 'resnet20_vanilla'
    teacher_dir.mkdir()
    torch.save({'model': model_dict['resnet20'](num_classes=10).state_dict()}, teacher_dir / 'resnet20_best.pth')
    state = train_student.main(['--path_t', str(teacher_dir / 'resnet20_best.pth'), '--distill', 'NORM', '-s', '2',
                                '--model_s', 'resnet8', '--dataset', 'digits', '--epochs', '1', '--precision',
                                'fp32', '--skip-validation', '--save_root', str(tmp_path / 'save')])
    folder = tmp_path / 'save' / 'students' / 'models'
    folder = folder / os.listdir(folder)[0]
    best = torch.load(folder / 'resnet8_best.pth', weights_only=True)
    assert set(best['norm_ft']) == {'state_dict', 'residual', 'classifier'}
    assert set(best['model']) == set(model_dict['resnet8'](num_classes=10).state_dict())
    result = tools.eval.main(['--path', str(folder / 'resnet8_deploy.pth'), '--dataset', 'digits',
                              '--precision', 'fp32'])
    assert result['model'] == 'resnet8'
    assert result['top1'] == pytest.approx(state['history'][-1]['val_top1'])
    # eval reports both sizes: the plain student it ships, and the student with its FT as trained
    plain = sum(p.numel() for p in model_dict['resnet8'](num_classes=10).parameters())
    assert result['num_params'] == plain
    assert result['num_params_trained'] > plain


def test_one_means_no_ft_and_matches_the_map_directly():
    args, student, teacher, method = make('norm', 'resnet20', 'resnet8', '-s', '1', num_classes=10)
    assert method.ft is None and method.deployable(student, teacher) is None
    student.eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(method.predict(student, teacher, images), student(images))
        out = DistillObjective(student, teacher, method).step(batch_of(2, num_classes=10), epoch=30)
    assert set(out.losses) == {'ce', 'norm'}


# ---- command line ---------------------------------------------------------------------------------------
def test_norm_spellings_of_c_and_s():
    args = parse('--distill', 'NORM', '-c', '2.5', '-s', '8', '--model_s', 'resnet8x4')
    assert (args.ceta, args.co_sponge) == (2.5, 8)
    assert (args.gamma, args.alpha, args.beta) == (0.1, 0.0, 1.0)  # the README's -r 0.1 -a 0 -b 1.0
    args = parse('--distill', 'norm_crd', '-c3', '-s', '4', '--cls', '0.5', '--plain_ft', '--no_logit_norm')
    assert (args.ceta, args.co_sponge, args.gamma, args.plain_ft, args.no_logit_norm) == (3.0, 4, 0.5, True, True)
    assert parse('--distill', 'norm_kd').alpha == 1.0
    other = parse('--distill', 'kd', '-c', '0.3', '-s', '2')  # other methods keep the SimKD repo's -c/-s
    assert (other.gamma, other.soft, other.ceta, other.co_sponge) == (0.3, 2.0, 2.5, 8)


# ---- norm_crd -------------------------------------------------------------------------------------------
def test_norm_crd_step_on_a_crd_batch():
    args, student, teacher, method = make('NORM_CRD', 'resnet32x4', 'resnet8x4', '--nce_k', '16', num_train=64)
    assert DISTILLERS['NORM_CRD'].data_options(args)['train_sample'].k == 16
    objective = DistillObjective(student, teacher, method).train()
    optimizer = torch.optim.SGD([p for m in objective.trainable_modules() for p in m.parameters()], lr=0.01)
    out = objective.step(batch_of(8, nce_k=16), epoch=30)
    assert set(out.losses) == {'ce', 'norm', 'crd'} and all(torch.isfinite(v) for v in out.losses.values())
    sum(out.losses.values()).backward()
    for module in (method.ft, method.criterion.embed_s, method.criterion.embed_t, student):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    before = method.ft.expand[0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, method.ft.expand[0].weight)


# ---- errors ---------------------------------------------------------------------------------------------
def one_line_error(build):
    with pytest.raises(KDZooError) as err:
        build()
    assert '\n' not in str(err.value)
    return str(err.value)


def test_bad_input_is_one_line():
    assert '-s/--co-sponge' in one_line_error(lambda: make('norm', 'resnet20', 'resnet8', '-s', '0', num_classes=10))
    assert 'pass -s 2' in one_line_error(lambda: make('norm', 'resnet32x4', 'resnet8', '-s', '1'))
    fake_teacher = run_network(model_dict['resnet20'](num_classes=10).eval(),
                                             torch.randn(2, 3, 32, 32), True, False)
    fake_teacher.feats[-2] = torch.randn(2, 64, 3, 3)  # 3x3 is no multiple of resnet8's 8x8
    assert 'integer multiples' in one_line_error(
        lambda: make('norm', 'resnet20', 'resnet8', num_classes=10, probe_t=fake_teacher))


def test_bad_n_from_the_command_line_writes_nothing(tmp_path):
    teacher_dir = tmp_path / 'resnet20_vanilla'
    teacher_dir.mkdir()
    torch.save({'model': model_dict['resnet20'](num_classes=10).state_dict()}, teacher_dir / 'resnet20_best.pth')
    with pytest.raises(KDZooError, match='co-sponge'):
        train_student.main(['--path_t', str(teacher_dir / 'resnet20_best.pth'), '--distill', 'NORM', '-s', '0',
                            '--model_s', 'resnet8', '--dataset', 'digits', '--save_root', str(tmp_path / 'save')])
    assert not (tmp_path / 'save').exists()
