"""MKL and NTCE-KD: the loss against a NumPy transcription, its gradient, warm-up and per-pair defaults;
the batched strong augmentation against PIL and its random statistics; the strong view in the loader
(replayable per (seed, epoch), its own stream); one NTCE-KD step on both views; the user errors."""
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import chi2

import train_student
from dataset import build_data
from dataset.batches import STRONG_STREAM, Batch, epoch_generator
from dataset.memory import InMemoryLoader, crop_flip, draw_crop_flip
from dataset.strong_augment import (CUTOUT_FILL, NUM_OPS, OP_INDEX, OPS, apply_ops, cutout, draw_strong,
                                    strong_augment)
from distiller_zoo import DISTILLERS
from distiller_zoo.MKL import mkl_loss, parse_factors
from distiller_zoo.base import kd_loss
from helper.errors import KDZooError
from engine.objective import DistillObjective
from models import imagenet_model_dict, model_dict

from conftest import REPO, killed_then_resumed

sys.path.insert(0, os.path.join(REPO, 'bench'))
from bench_strong_aug import PIL_OPS, pil_cutout  # noqa: E402


def parse(*argv, model_t='resnet32x4', model_s='resnet8x4', dataset='cifar100'):
    return train_student.parse_args(['--path_t', 'teacher.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--dataset', dataset, *argv])


# ---------------------------------------------------------------- the MKL loss

def np_mkl(s, t, y, factors, T):
    """MKL written out in float64 NumPy, sample by sample and factor by factor."""
    total = 0.0
    for f in factors:
        for i in range(len(s)):
            order = np.argsort(-t[i])
            shift = f * (t[i, order[0]] - t[i, order[1]])
            tt, ss = t[i].copy(), s[i].copy()
            tt[order[0]] -= shift
            ss[y[i]] -= shift
            p = np.exp(tt / T) / np.exp(tt / T).sum()
            q = np.exp(ss / T) / np.exp(ss / T).sum()
            total += T * T * np.sum(p * (np.log(p) - np.log(q))) / len(s)
    return total / len(factors)


def test_mkl_matches_numpy_on_hand_made_logits():
    s = np.array([[2.0, 1.0, 0.5, -1.0], [0.3, 0.2, 3.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    t = np.array([[4.0, 1.5, 0.0, -2.0], [1.0, 0.0, 2.0, 5.0], [0.5, 3.0, 2.5, 0.0]])
    y = np.array([0, 2, 1])  # the teacher's arg-max is not the label in row 1
    for factors, T in (((2, 1.5, 1, 0.5, 0, -0.5, -1), 4.0), ((2, 1.5, 1, 0.5, 0), 4.0), ((1.0,), 1.0)):
        got = mkl_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), factors, T)
        assert got.item() == pytest.approx(np_mkl(s, t, y, factors, T), rel=1e-5)
    # shrinking the top logit moves softened mass to the non-target classes: the loss changes with f
    assert mkl_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), (2,), 4) != \
        mkl_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), (0,), 4)


def test_mkl_with_factor_zero_is_kd_exactly():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 100, generator=g), torch.randn(16, 100, generator=g) * 3
    y = torch.randint(0, 100, (16,), generator=g)
    assert torch.equal(mkl_loss(s, t, y, (0,), 4.0), kd_loss(s, t, 4.0))


def test_mkl_gradient_is_the_mean_softmax_difference():
    """d MKL / d s = T / (B |F|) * sum_f (softmax(s_f / T) - softmax(t_f / T)), and nothing reaches the teacher."""
    g = torch.Generator().manual_seed(1)
    s = torch.randn(8, 10, generator=g, requires_grad=True)
    t = torch.randn(8, 10, generator=g) * 2
    y = torch.randint(0, 10, (8,), generator=g)
    factors, T = (2, 1, 0, -1), 3.0
    mkl_loss(s, t, y, factors, T).backward()
    top2 = t.topk(2, dim=1)
    gap = (top2.values[:, 0] - top2.values[:, 1])[:, None]
    expected = torch.zeros_like(t)
    for f in factors:
        s_f = s.detach() - f * gap * F.one_hot(y, 10)
        t_f = t - f * gap * F.one_hot(top2.indices[:, 0], 10)
        expected += torch.softmax(s_f / T, 1) - torch.softmax(t_f / T, 1)
    assert torch.allclose(s.grad, expected * T / (8 * len(factors)), atol=1e-7)


# ---------------------------------------------------------------- defaults, warm-up, errors

@pytest.mark.parametrize('model_t, model_s, beta, factors', [
    ('resnet32x4', 'resnet8x4', 8.0, (2, 1.5, 1, 0.5, 0)),
    ('resnet32x4', 'ShuffleV1', 8.0, (2, 1.5, 1, 0.5, 0)),
    ('resnet32x4', 'ShuffleV2', 8.0, (2, 1.5, 1, 0.5, 0)),
    ('resnet32x4', 'MobileNetV2', 8.0, (2, 1.5, 1, 0.5, 0, -0.5, -1)),
    ('wrn_40_2', 'wrn_16_2', 8.0, (2, 1.5, 1, 0.5, 0, -0.5, -1)),
    ('resnet56', 'resnet20', 2.0, (2, 1.5, 1, 0.5, 0, -0.5, -1)),
    ('resnet110', 'resnet32', 2.0, (2, 1.5, 1, 0.5, 0, -0.5, -1)),
])
@pytest.mark.parametrize('name', ['mkl', 'ntce'])
def test_defaults_per_pair(name, model_t, model_s, beta, factors):
    args = parse('--distill', name, model_t=model_t, model_s=model_s)
    assert (args.gamma, args.alpha, args.beta) == (1.0, 0.0, beta)
    assert DISTILLERS[name].settings(args) == (factors, 4.0, 20)


def test_imagenet_defaults_and_flags():
    args = parse('--distill', 'mkl', model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
    assert (args.gamma, args.alpha, args.beta) == (1.0, 0.0, 2.0)
    assert DISTILLERS['mkl'].settings(args) == ((2, 1.5, 1, 0.5, 0, -0.5, -1), 1.0, 1)
    args = parse('--distill', 'mkl', '--mkl_factors', '1, 0.5,0', '--mkl_T', '2', '--mkl_warmup', '5',
                 '-b', '3')
    assert args.beta == 3.0 and DISTILLERS['mkl'].settings(args) == ((1.0, 0.5, 0.0), 2.0, 5)
    assert parse('--distill', 'mkl', '--mkl_factors=-1,0.5').mkl_factors == (-1.0, 0.5)


@pytest.mark.parametrize('text', ['', ' , '])
def test_empty_factor_list_is_one_line_error(text):
    with pytest.raises(KDZooError, match='--mkl_factors is empty') as err:
        parse('--distill', 'mkl', '--mkl_factors', text)
    assert '\n' not in str(err.value)
    with pytest.raises(KDZooError, match='comma-separated numbers'):
        parse_factors('2,x')


def test_ntce_on_imagenet_takes_mkl_imagenet_defaults():
    args = parse('--distill', 'ntce', model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
    assert DISTILLERS['ntce'].data_options(args) == {'strong_view': True}  # declared; every loader honours it
    assert args.beta == 2.0 and DISTILLERS['ntce'].settings(args) == ((2, 1.5, 1, 0.5, 0, -0.5, -1), 1.0, 1)


def small_objective(name, *argv):
    """resnet8 student and teacher (random weights) on digits, wired as train_student.py does."""
    args = parse('--distill', name, '--dataset', 'digits', *argv, model_t='resnet8', model_s='resnet8')
    data = build_data('digits', '', 16, 'cpu', seed=0, **DISTILLERS[name].data_options(args))
    torch.manual_seed(0)
    student, teacher = model_dict['resnet8'](num_classes=10), model_dict['resnet8'](num_classes=10).eval()
    method = DISTILLERS[name](args, student, teacher, None, None, data)
    return DistillObjective(student, teacher, method), data


def test_warm_up_scales_only_the_mkl_term():
    objective, data = small_objective('mkl', '-a', '0.5')
    objective.eval()  # no BN updates between the calls
    data.train.set_epoch(1)
    batch = next(iter(data.train))
    with torch.no_grad():
        terms = {epoch: objective.step(batch, epoch).losses for epoch in (1, 5, 20, 100)}
    assert objective.method.ramp(1) == 1 / 20 and objective.method.ramp(25) == 1.0
    for epoch, fraction in ((1, 1 / 20), (5, 5 / 20), (20, 1.0)):
        assert torch.allclose(terms[epoch]['mkl'], fraction * terms[100]['mkl'], rtol=1e-6)
        assert torch.equal(terms[epoch]['ce'], terms[100]['ce']) and torch.equal(terms[epoch]['kd'],
                                                                                 terms[100]['kd'])


# ---------------------------------------------------------------- NTCE-KD

def test_ntce_step_uses_both_views():
    objective, data = small_objective('ntce')
    method = objective.method
    assert not list(method.parameters()) and not method.state_dict()  # student and teacher not submodules
    assert method.trainable_modules() == []
    data.train.set_epoch(3)
    batch = next(iter(data.train))
    assert batch.images_strong.shape == batch.images.shape
    seen = []
    objective.model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    objective.train()
    losses = objective.step(batch, epoch=30).losses
    assert len(seen) == 2 and seen[0] is batch.images and seen[1] is batch.images_strong
    assert set(losses) == {'ce', 'ntce'}

    objective.eval()  # the same numbers again, without BN updates, against the formula per view
    with torch.no_grad():
        losses = objective.step(batch, epoch=30).losses
        views = [(objective.model(x), objective.teacher(x)) for x in (batch.images, batch.images_strong)]
    ce = sum(F.cross_entropy(s, batch.targets) for s, _ in views) / 2
    mkl = sum(mkl_loss(s, t, batch.targets, method.factors, 4.0) for s, t in views) / 2
    assert torch.allclose(losses['ce'], ce) and torch.allclose(losses['ntce'], 8.0 * mkl)
    # the strong view matters: replacing it by the weak one changes the loss
    same = Batch(batch.images, batch.targets, batch.indices, images_strong=batch.images)
    with torch.no_grad():
        assert not torch.allclose(objective.step(same, epoch=30).losses['ntce'], losses['ntce'])

    objective.train()
    objective.zero_grad()
    sum(objective.step(batch, epoch=30).losses.values()).backward()
    assert all(p.grad is not None for p in objective.model.parameters())
    assert all(p.grad is None for p in objective.teacher.parameters())


# ---------------------------------------------------------------- the strong view in the loader

def loader(strong_view, seed=0, count=48):
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (count, 32, 32, 3), dtype=torch.uint8, generator=g)
    return InMemoryLoader(images, torch.zeros(count, dtype=torch.int64), 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                          train=True, seed=seed, strong_view=strong_view)


def test_strong_view_replays_per_epoch_and_has_its_own_stream():
    with_strong, without = loader(True), loader(False)
    with_strong.set_epoch(2)
    without.set_epoch(2)
    first, again, plain = list(with_strong), list(with_strong), list(without)
    for a, b, c in zip(first, again, plain):
        assert torch.equal(a.images_strong, b.images_strong)
        assert torch.equal(a.images, c.images) and c.images_strong is None  # weak view unchanged
        assert not torch.equal(a.images, a.images_strong)
    # the strong view is a function of (seed, epoch, STRONG_STREAM) and the indices alone
    generator = epoch_generator(0, 2, STRONG_STREAM)
    for batch in first:
        pixels = crop_flip(with_strong.images, batch.indices, *draw_crop_flip(len(batch.indices), generator, 'cpu'))
        expected = (strong_augment(pixels, generator).float() / 255 - 0.5) / 0.25
        assert torch.allclose(batch.images_strong, expected.permute(0, 3, 1, 2))
    with_strong.set_epoch(3)
    assert not torch.equal(next(iter(with_strong)).images_strong, first[0].images_strong)
    other_seed = loader(True, seed=1)
    other_seed.set_epoch(2)
    assert not torch.equal(next(iter(other_seed)).images_strong, first[0].images_strong)


def test_validation_batches_have_no_strong_view():
    data = build_data('digits', '', 64, 'cpu', strong_view=True, channels_last=True)
    assert next(iter(data.val)).images_strong is None
    strong = next(iter(data.train)).images_strong
    assert strong.shape == (64, 3, 32, 32) and strong.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- the operations

def test_draws_choose_every_operation_equally_often_with_magnitudes_in_range():
    count = 21000
    draws = draw_strong(count, 32, 32, torch.Generator().manual_seed(0), 'cpu')
    ops, mags = draws['ops'].view(-1), draws['mags'].view(-1)
    assert draws['ops'].shape == (count, NUM_OPS)
    counts = torch.bincount(ops, minlength=len(OPS)).double()
    expected = len(ops) / len(OPS)
    assert ((counts - expected) ** 2 / expected).sum() < chi2.ppf(0.999, len(OPS) - 1)
    for k, (name, low, high) in enumerate(OPS):
        m = mags[ops == k]
        assert low <= m.min() and m.max() < high, name
        assert abs(m.mean().item() - (low + high) / 2) < 0.03 * (high - low), name  # uniform: mean in the middle
    assert 0 <= draws['cut_side'].min() and draws['cut_side'].max() < 16
    for centre in (draws['cut_x'], draws['cut_y']):  # np.random.uniform(w) of the reference: on (1, w]
        assert 1 < centre.min() and centre.max() <= 32 and abs(centre.mean().item() - 16.5) < 0.3


def test_cutout_box_by_hand_and_area_bounds():
    images = torch.zeros(3, 10, 12, 3, dtype=torch.uint8)
    out = cutout(images, torch.tensor([4.0, 3.5, 0.0]), torch.tensor([5.0, 12.0, 6.0]), torch.tensor([1.5, 9.0, 5.0]))
    filled = out.eq(torch.tensor(CUTOUT_FILL, dtype=torch.uint8)).all(-1)
    # image 0: x0 = int(5 - 2) = 3, x1 = 7; y0 = int(max(0, -0.5)) = 0, y1 = 4: a 5 x 5 box, corners included
    assert torch.equal(filled[0].nonzero().amin(0), torch.tensor([0, 3]))
    assert torch.equal(filled[0].nonzero().amax(0), torch.tensor([4, 7])) and filled[0].sum() == 25
    # image 1: x0 = int(10.25) = 10, x1 = min(12, 13.5) = 12 -> columns 10, 11; rows 7..9 (clipped)
    assert filled[1].sum() == 2 * 3 and filled[1, 7:, 10:].all()
    assert not filled[2].any()  # side 0: untouched

    draws = draw_strong(4000, 32, 32, torch.Generator().manual_seed(3), 'cpu')
    out = cutout(torch.zeros(4000, 32, 32, 3, dtype=torch.uint8), draws['cut_side'], draws['cut_x'],
                 draws['cut_y'])
    area = out.eq(torch.tensor(CUTOUT_FILL, dtype=torch.uint8)).all(-1).sum((1, 2))
    side = draws['cut_side'].floor() + 1
    assert area.min() >= 1 and (area <= side * side).all() and area.max() <= 17 * 17
    assert out.ne(0).any(-1).sum((1, 2)).equal(area)  # nothing outside the box changes


def test_identity_leaves_images_unchanged():
    images = torch.randint(0, 256, (8, 9, 11, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ops = torch.full((8,), OP_INDEX['Identity'])
    for subsets in (True, False):
        assert torch.equal(apply_ops(images, ops, torch.rand(8), subsets=subsets), images)


def test_whole_batch_and_per_stage_subsets_agree():
    """The GPU way (every image through every stage) and the CPU way (each stage on its images only)."""
    g = torch.Generator().manual_seed(6)
    images = torch.randint(0, 256, (200, 12, 10, 3), dtype=torch.uint8, generator=g)
    draws = draw_strong(200, 10, 12, g, 'cpu')
    for step in range(NUM_OPS):
        ops, mags = draws['ops'][:, step], draws['mags'][:, step]
        whole = apply_ops(images, ops, mags, subsets=False)
        assert torch.equal(whole, apply_ops(images, ops, mags, subsets=True))
        images = whole


def test_posterize_solarize_autocontrast_by_hand():
    image = torch.tensor([[[183, 100, 50], [20, 200, 128]]], dtype=torch.uint8)[None]  # 1 x 1 x 2 x 3
    two = lambda name, mag: apply_ops(image, torch.tensor([OP_INDEX[name]]), torch.tensor([mag]))[0, 0]
    assert two('Posterize', 4.7).tolist() == [[176, 96, 48], [16, 192, 128]]  # keep the top 4 bits
    assert two('Solarize', 128.0).tolist() == [[72, 100, 50], [20, 55, 127]]  # v >= 128 -> 255 - v
    # per channel, lo..hi stretched to 0..255 and truncated: green's top lands on 200 * 2.55 - 100 * 2.55 =
    # 254.99999999999997 in double precision, so 254, as in PIL
    assert two('AutoContrast', 0.0).tolist() == [[255, 0, 0], [0, 254, 255]]


@pytest.mark.parametrize('name', [op[0] for op in OPS])
def test_each_operation_matches_pil(name):
    """Non-square images (12 x 10) catch swapped axes; random magnitudes over the whole range."""
    rng = np.random.default_rng(OP_INDEX[name])
    images = rng.integers(0, 256, (24, 12, 10, 3), dtype=np.uint8)
    images[::3] = images[::3] // 4 + 90  # low-contrast images, where AutoContrast and Equalize do most
    _, low, high = OPS[OP_INDEX[name]]
    mags = torch.tensor(low + (high - low) * rng.random(24), dtype=torch.float32)
    got = apply_ops(torch.from_numpy(images), torch.full((24,), OP_INDEX[name]), mags).numpy()
    want = np.stack([np.asarray(PIL_OPS[name](Image.fromarray(image), float(m)))
                     for image, m in zip(images, mags)])
    # PIL's nearest-neighbour rotation accumulates coordinates in fixed point: rare pixels on a boundary differ
    assert (got != want).mean() <= (0.002 if name == 'Rotate' else 0.0)


def test_cutout_matches_pil():
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (32, 12, 10, 3), dtype=torch.uint8, generator=g)
    draws = draw_strong(32, 10, 12, g, 'cpu')
    got = cutout(images, draws['cut_side'], draws['cut_x'], draws['cut_y']).numpy()
    want = np.stack([np.asarray(pil_cutout(Image.fromarray(image), float(s), float(x), float(y)))
                     for image, s, x, y in zip(images.numpy(), draws['cut_side'], draws['cut_x'], draws['cut_y'])])
    assert np.array_equal(got, want)


def test_two_operations_apply_in_order():
    """The second operation sees the first one's output: Solarize then Rotate differs from the reverse."""
    images = torch.randint(0, 256, (1, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    solarize, rotate = torch.tensor([OP_INDEX['Solarize']]), torch.tensor([OP_INDEX['Rotate']])
    first = apply_ops(apply_ops(images, solarize, torch.tensor([0.0])), rotate, torch.tensor([20.0]))
    pil = PIL_OPS['Rotate'](PIL_OPS['Solarize'](Image.fromarray(images[0].numpy()), 0.0), 20.0)
    assert (first[0].numpy() != np.asarray(pil)).mean() < 0.01
    reverse = apply_ops(apply_ops(images, rotate, torch.tensor([20.0])), solarize, torch.tensor([0.0]))
    assert not torch.equal(first, reverse)  # black corners of the rotation are solarized to white


@pytest.mark.slow
def test_interrupted_ntce_run_resumes_exactly(tmp_path, monkeypatch):
    """The strong view replays per (seed, epoch): a run cut after epoch 1 and resumed ends bit for bit where an
    uninterrupted one does (on the first 384 training and 64 test digits, to keep it quick)."""
    import dataset.digits
    split = dataset.digits.digits_split()
    monkeypatch.setattr(dataset.digits, 'digits_split', lambda: (split[0][:384], split[1][:384], split[2][:64],
                                                                 split[3][:64]))
    torch.manual_seed(0)
    teacher = str(tmp_path / 'resnet8_vanilla' / 'resnet8_best.pth')  # untrained: any fixed teacher will do
    os.makedirs(os.path.dirname(teacher))
    torch.save({'model': model_dict['resnet8'](num_classes=10).state_dict()}, teacher)

    def run(root, *extra):
        return train_student.main(['--path_t', teacher, '--distill', 'ntce', '--model_s', 'resnet8', '--dataset',
                                   'digits', '--batch_size', '128', '--epochs', '2', '--deterministic',
                                   '--skip-validation', '--save_root', str(root), *extra])
    whole = run(tmp_path / 'whole')
    parted = killed_then_resumed(monkeypatch, run, tmp_path / 'parted')
    assert parted['history'][-1]['train_loss'] == whole['history'][-1]['train_loss']

    def weights(root):
        folder = root / 'students' / 'models'
        return torch.load(folder / os.listdir(folder)[0] / 'resnet8_last.pth', weights_only=True)['model']
    a, b = weights(tmp_path / 'whole'), weights(tmp_path / 'parted')
    assert all(torch.equal(a[key], b[key]) for key in a)


# ---------------------------------------------------------------- the strong view on ImageNet folders

def write_folders(root, per_class=3):
    """Two classes of JPEGs with ramps (so crops and operations show), 2 validation images each."""
    for split, count in (('train', per_class), ('val', 2)):
        for label in range(2):
            os.makedirs(root / split / f'n0{label}', exist_ok=True)
            for number in range(count):
                width, height = 260 + 20 * number, 240 - 10 * number
                rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
                pixels = np.stack([np.full((height, width), 80 * label + 40), cols * 255 // width,
                                   rows * 255 // height], axis=-1).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f'n0{label}' / f'{number}.JPEG', quality=95)
    return root


def test_image_folder_strong_view_is_the_reference_transform(tmp_path):
    from dataset.image_transforms import to_uint8_chw, train_crop
    from dataset.imagenet import MEAN, STD
    root = write_folders(tmp_path)
    data = build_data('imagenet', str(root), 4, 'cpu', num_workers=0, seed=4, strong_view=True)
    plain = build_data('imagenet', str(root), 4, 'cpu', num_workers=0, seed=4)
    data.train.set_epoch(2)
    plain.train.set_epoch(2)
    first, again, weak = list(data.train), list(data.train), list(plain.train)
    generator = epoch_generator(4, 2, STRONG_STREAM)
    paths = data.train.loader.dataset.paths
    for a, b, c in zip(first, again, weak, strict=True):
        assert a.images_strong.shape == a.images.shape == (len(a.targets), 3, 224, 224)
        assert torch.equal(a.images_strong, b.images_strong)  # replays per (seed, epoch)
        assert torch.equal(a.images, c.images) and c.images_strong is None  # the weak view is unchanged
        # its own crop and flip (stream STRONG_STREAM, per image), then the operations for the whole batch
        crops = []
        for index in a.indices.tolist():
            with Image.open(os.fsdecode(paths[index])) as image:
                rng = np.random.default_rng([4, 2, STRONG_STREAM, index])
                crops.append(to_uint8_chw(train_crop(image.convert('RGB'), rng)))
        pixels = strong_augment(torch.stack(crops).permute(0, 2, 3, 1).contiguous(), generator)
        expected = (pixels.float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
        torch.testing.assert_close(a.images_strong, expected.permute(0, 3, 1, 2))
        assert not torch.equal(a.images, a.images_strong)
    assert next(iter(data.val)).images_strong is None


def test_strong_view_switched_on_reaches_running_workers(tmp_path):
    root = write_folders(tmp_path)
    data = build_data('imagenet', str(root), 6, 'cpu', num_workers=2, seed=1)
    data.train.set_epoch(1)
    assert next(iter(data.train)).images_strong is None  # the persistent workers are up now
    data.train.strong_view = True  # as NTCE's constructor does
    reference = build_data('imagenet', str(root), 6, 'cpu', num_workers=0, seed=1, strong_view=True)
    reference.train.set_epoch(1)
    torch.testing.assert_close(next(iter(data.train)).images_strong, next(iter(reference.train)).images_strong)


def test_ntce_trains_on_imagenet_folders(tmp_path):
    root = write_folders(tmp_path / 'data', per_class=2)
    teacher = str(tmp_path / 'ResNet18_vanilla' / 'ResNet18_best.pth')
    os.makedirs(os.path.dirname(teacher))
    torch.manual_seed(0)
    torch.save({'model': imagenet_model_dict['ResNet18'](num_classes=2).state_dict()}, teacher)
    seen = []
    step = DistillObjective.step

    def remember(self, batch, epoch):
        seen.append(batch)
        return step(self, batch, epoch)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DistillObjective, 'step', remember)
        state = train_student.main(['--path_t', teacher, '--distill', 'ntce', '--model_s', 'ResNet18',
                                    '--dataset', 'imagenet', '--data_folder', str(root), '--batch_size', '2',
                                    '--num_workers', '0', '--epochs', '1', '--precision', 'fp32',
                                    '--skip-validation', '--save_root', str(tmp_path / 'save')])
    assert len(seen) == 2 and all(b.images_strong.shape == (2, 3, 224, 224) for b in seen)
    assert state['history'][-1]['train_ntce'] >= 0 and np.isfinite(state['history'][-1]['train_loss'])
