"""FitNet, AT, SP, NST, PKT and RKD: each loss against a NumPy transcription of its formula (values) and
central finite differences of that transcription (gradients w.r.t. the student input), in float64;
module construction from real model pairs through the probe; the bad-input errors."""
import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from distiller_zoo import DISTILLERS, Attention, HintLoss, NSTLoss, PKT, RKDLoss, Similarity
from models.features import run_network
from helper.errors import KDZooError
from models import model_dict
from models.util import ConvReg
from distiller_zoo.teacher import probe_networks


# ---------------------------------------------------------------- independent NumPy formulas

def np_adaptive_pool(f, size):
    """Adaptive average pooling of (B, C, H, W) to (B, C, size, size), window by window."""
    height, width = f.shape[2:]
    out = np.zeros(f.shape[:2] + (size, size))
    for i in range(size):
        h0, h1 = i * height // size, -(-(i + 1) * height // size)
        for j in range(size):
            w0, w1 = j * width // size, -(-(j + 1) * width // size)
            out[:, :, i, j] = f[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def np_same_height(fs, ft):
    if fs.shape[2] > ft.shape[2]:
        fs = np_adaptive_pool(fs, ft.shape[2])
    elif ft.shape[2] > fs.shape[2]:
        ft = np_adaptive_pool(ft, fs.shape[2])
    return fs, ft


def np_unit_rows(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def np_hint(fs, ft):
    return ((fs - ft) ** 2).sum() / fs.size


def np_at(fs, ft, p=2):
    fs, ft = np_same_height(fs, ft)

    def attention(f):
        return np_unit_rows((f ** p).mean(axis=1).reshape(len(f), -1))
    return ((attention(fs) - attention(ft)) ** 2).mean()


def np_sp(fs, ft):
    batch = len(fs)

    def gram(f):
        f = f.reshape(batch, -1)
        return np_unit_rows(np.array([[f[i] @ f[j] for j in range(batch)] for i in range(batch)]))
    return ((gram(ft) - gram(fs)) ** 2).sum() / batch ** 2


def np_nst(fs, ft):
    fs, ft = np_same_height(fs, ft)
    vs = np_unit_rows(fs.reshape(fs.shape[0], fs.shape[1], -1))
    vt = np_unit_rows(ft.reshape(ft.shape[0], ft.shape[1], -1))

    def mean_kernel(a, b):
        return np.mean([(a[n, i] @ b[n, j]) ** 2
                        for n in range(len(a)) for i in range(a.shape[1]) for j in range(b.shape[1])])
    return mean_kernel(vt, vt) + mean_kernel(vs, vs) - 2 * mean_kernel(vs, vt)


def np_pkt(es, et, eps=1e-7):
    def conditional(e):
        e = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
        kernel = (e @ e.T + 1) / 2
        return kernel / kernel.sum(axis=1, keepdims=True)
    ps, pt = conditional(es), conditional(et)
    return np.mean(pt * np.log((pt + eps) / (ps + eps)))


def np_smooth_l1(x, y):
    d = np.abs(x - y)
    return np.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()


def np_rkd(es, et, w_d=25, w_a=50):
    def distances(e):
        d = np.array([[np.linalg.norm(a - b) for b in e] for a in e])
        return d / d[d > 0].mean()

    def angles(e):
        n = len(e)
        out = np.zeros((n, n, n))
        for a in range(n):
            for b in range(n):
                for c in range(n):
                    u, v = e[b] - e[a], e[c] - e[a]
                    if np.linalg.norm(u) > 0 and np.linalg.norm(v) > 0:
                        out[a, b, c] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        return out
    return w_d * np_smooth_l1(distances(es), distances(et)) + w_a * np_smooth_l1(angles(es), angles(et))


def finite_difference(fn, x, h=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (fn(up) - fn(down)) / (2 * h)
    return grad


def check_value_and_grad(torch_loss, np_loss, fs, ft, rtol=1e-6):
    """torch_loss(student tensor, teacher tensor) against np_loss on the same float64 arrays."""
    student = torch.tensor(fs, requires_grad=True)
    value = torch_loss(student, torch.tensor(ft))
    value.backward()
    expected = np_loss(fs, ft)
    assert value.dtype == torch.float64 and value.dim() == 0
    assert value.item() == pytest.approx(expected, rel=rtol, abs=1e-12)
    assert expected != 0
    numeric = finite_difference(lambda x: np_loss(x, ft), fs)
    scale = np.abs(numeric).max()
    np.testing.assert_allclose(student.grad.numpy(), numeric, rtol=1e-4, atol=1e-5 * scale)


def maps(seed, *shapes):
    """Non-negative (post-ReLU-like) random float64 maps."""
    rng = np.random.default_rng(seed)
    return [np.maximum(rng.standard_normal(shape), 0) + 0.05 * rng.random(shape) for shape in shapes]


# ---------------------------------------------------------------- loss values and gradients

def test_hint_loss_is_mean_squared_error():
    fs, ft = np.random.default_rng(0).standard_normal((2, 2, 3, 4, 4))
    check_value_and_grad(HintLoss(), np_hint, fs, ft)


@pytest.mark.parametrize('shapes', [((2, 3, 4, 4), (2, 5, 4, 4)),   # same size, other channel count
                                    ((2, 3, 8, 8), (2, 4, 4, 4)),   # student map pooled
                                    ((2, 3, 4, 4), (2, 2, 8, 8)),   # teacher map pooled
                                    ((2, 3, 6, 6), (2, 2, 4, 4))])  # overlapping adaptive windows
def test_attention_matches_formula(shapes):
    fs, ft = maps(1, *shapes)
    check_value_and_grad(lambda s, t: Attention(p=2)([s], [t])[0], np_at, fs, ft)


def test_attention_p_and_list_pairing():
    fs1, ft1, fs2, ft2, extra = maps(2, (2, 3, 4, 4), (2, 2, 4, 4), (2, 3, 2, 2), (2, 4, 4, 4), (2, 1, 2, 2))
    as_t = [torch.tensor(a) for a in (fs1, fs2, extra)]
    losses = Attention(p=3)(as_t, [torch.tensor(ft1), torch.tensor(ft2)])
    assert len(losses) == 2  # zip: the surplus student map is ignored, as in RepDistiller
    assert losses[0].item() == pytest.approx(np_at(fs1, ft1, p=3), rel=1e-10)
    assert losses[1].item() == pytest.approx(np_at(fs2, ft2, p=3), rel=1e-10)


@pytest.mark.parametrize('shapes', [((4, 3, 2, 2), (4, 5, 3, 3)), ((3, 2, 4, 4), (3, 2, 4, 4))])
def test_similarity_matches_formula(shapes):
    fs, ft = maps(3, *shapes)
    check_value_and_grad(lambda s, t: Similarity()([s], [t])[0], np_sp, fs, ft)


@pytest.mark.parametrize('shapes', [((2, 3, 4, 4), (2, 5, 4, 4)), ((2, 3, 8, 8), (2, 2, 4, 4)),
                                    ((2, 4, 2, 2), (2, 3, 4, 4))])
def test_nst_matches_formula(shapes):
    fs, ft = maps(4, *shapes)
    check_value_and_grad(lambda s, t: NSTLoss()([s], [t])[0], np_nst, fs, ft)


def test_pkt_matches_formula():
    rng = np.random.default_rng(5)
    es, et = rng.standard_normal((5, 6)), rng.standard_normal((5, 3))
    check_value_and_grad(PKT(), np_pkt, es, et)


def test_pkt_zero_embedding_has_finite_gradient():
    es = np.random.default_rng(6).standard_normal((4, 3))
    es[1] = 0
    et = np.random.default_rng(7).standard_normal((4, 3))
    student = torch.tensor(es, requires_grad=True)
    value = PKT()(student, torch.tensor(et))
    value.backward()
    assert value.item() == pytest.approx(np_pkt(es, et), rel=1e-10)
    assert torch.isfinite(student.grad).all()  # RepDistiller's sqrt gives NaN here


@pytest.mark.parametrize('weights', [(25, 50), (1, 0), (0, 2)])
def test_rkd_matches_formula(weights):
    rng = np.random.default_rng(8)
    es, et = 3 * rng.standard_normal((5, 4)), rng.standard_normal((5, 6))
    w_d, w_a = weights
    check_value_and_grad(RKDLoss(w_d=w_d, w_a=w_a), lambda s, t: np_rkd(s, t, w_d, w_a), es, et)


def test_rkd_default_weights_are_25_and_50():
    loss = RKDLoss()
    assert (loss.w_d, loss.w_a) == (25, 50)


def test_losses_run_in_float32_under_bf16_autocast_on_channels_last_maps():
    fs, ft = (torch.tensor(a).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
              for a in maps(9, (4, 3, 4, 4), (4, 5, 4, 4)))
    es, et = fs.flatten(1), ft.flatten(1)
    cases = [(HintLoss(), ft * 0.5, ft), (lambda s, t: Attention()([s], [t])[0], fs, ft),
             (lambda s, t: Similarity()([s], [t])[0], fs, ft), (lambda s, t: NSTLoss()([s], [t])[0], fs, ft),
             (PKT(), es, et), (RKDLoss(), es, et)]
    for loss, s, t in cases:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = loss(s, t)
        full = loss(s.float(), t.float())
        assert low.dtype == torch.float32
        assert low.item() == pytest.approx(full.item(), rel=1e-5)


# ---------------------------------------------------------------- ConvReg

@pytest.mark.parametrize('s_shape, t_shape, kind, kernel, stride, padding', [
    ((2, 8, 16, 16), (2, 12, 8, 8), nn.Conv2d, (3, 3), (2, 2), (1, 1)),
    ((2, 8, 8, 8), (2, 12, 16, 16), nn.ConvTranspose2d, (4, 4), (2, 2), (1, 1)),
    ((2, 8, 10, 10), (2, 12, 8, 8), nn.Conv2d, (3, 3), (1, 1), (0, 0)),
    ((2, 8, 8, 8), (2, 12, 8, 8), nn.Conv2d, (1, 1), (1, 1), (0, 0)),
])
def test_convreg_layer_choice(s_shape, t_shape, kind, kernel, stride, padding):
    reg = ConvReg(s_shape, t_shape)
    assert type(reg.conv) is kind
    assert (reg.conv.in_channels, reg.conv.out_channels) == (s_shape[1], t_shape[1])
    assert (reg.conv.kernel_size, reg.conv.stride, reg.conv.padding) == (kernel, stride, padding)
    assert isinstance(reg.bn, nn.BatchNorm2d) and reg.bn.num_features == t_shape[1]
    out = reg(torch.randn(s_shape))
    assert out.shape == t_shape and (out >= 0).all()
    assert (ConvReg(s_shape, t_shape, use_relu=False)(torch.randn(s_shape)) < 0).any()


@pytest.mark.parametrize('s_shape, t_shape', [((2, 8, 4, 4), (2, 8, 16, 16)), ((2, 8, 6, 6), (2, 8, 8, 8)),
                                              ((2, 8, 8, 4), (2, 8, 8, 6))])
def test_convreg_unmatched_sizes(s_shape, t_shape):
    # RepDistiller's rule (kdzoo's FitNet and AB); the SimKD repo's pooling of the teacher map is tested in
    # tests/test_compat_models.py
    with pytest.raises(KDZooError, match=r'ConvReg cannot map a student feature map of shape \(8, '):
        ConvReg(s_shape, t_shape, pool_target=False)


# ---------------------------------------------------------------- methods built from real model pairs

@functools.lru_cache(maxsize=None)
def network(name):
    torch.manual_seed(0)
    return model_dict[name](num_classes=10)


def build(method_name, teacher_name, student_name, **overrides):
    student, teacher = network(student_name), network(teacher_name).eval().requires_grad_(False)
    method_cls = DISTILLERS[method_name]
    probe_s, probe_t = probe_networks(student, teacher, method_cls.preact, 32)
    args = SimpleNamespace(gamma=1.0, alpha=0.0, beta=1.0, kd_T=4.0, hint_layer=2, batch_size=64)
    vars(args).update(overrides)
    return method_cls(args, student, teacher, probe_s, probe_t, None), student, teacher


PAIRS = [('resnet32x4', 'resnet8x4'), ('wrn_40_2', 'wrn_16_2'), ('vgg13', 'MobileNetV2'),
         ('resnet32x4', 'ShuffleV1')]


@pytest.mark.parametrize('name, weights', [('hint', (1, 0, 100)), ('attention', (1, 0, 1000)),
                                           ('similarity', (1, 0, 3000)), ('nst', (1, 0, 50)),
                                           ('pkt', (1, 0, 30000)), ('rkd', (1, 0, 1))])
def test_registered_with_repdistiller_script_weights(name, weights):
    method = DISTILLERS[name]
    assert method.default_weights == weights and method.needs_feats and not method.preact


@pytest.mark.parametrize('teacher_name, student_name', PAIRS)
@pytest.mark.parametrize('name', ['hint', 'attention', 'similarity', 'nst', 'pkt', 'rkd'])
def test_method_on_real_pair(name, teacher_name, student_name):
    method, student, teacher = build(name, teacher_name, student_name)
    images = torch.randn(3, 3, 32, 32)
    student.zero_grad(set_to_none=True)
    with torch.no_grad():
        out_t = run_network(teacher, images, True, False)
    out_s = run_network(student, images, True, False)
    loss = method.method_loss(out_s, out_t, None, 1)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    if name == 'hint':
        assert method.trainable_modules() == [method]
        assert all(p.grad is not None for p in method.parameters())
    else:
        assert method.trainable_modules() == [] and not list(method.parameters())


@pytest.mark.parametrize('teacher_name, student_name, layer, kind, s_channels, t_channels', [
    ('resnet32x4', 'resnet8x4', 2, nn.Conv2d, 128, 128),           # equal sizes: 1x1 conv
    ('vgg13', 'MobileNetV2', 2, nn.Conv2d, 16, 256),
    ('resnet32x4', 'ShuffleV1', 2, nn.ConvTranspose2d, 480, 128),  # 8x8 student -> 16x16 teacher
    ('vgg13', 'resnet8x4', 1, nn.Conv2d, 64, 128),                 # 32x32 student -> 16x16 teacher
])
def test_fitnet_regressor_from_probe(teacher_name, student_name, layer, kind, s_channels, t_channels):
    method, student, teacher = build('hint', teacher_name, student_name, hint_layer=layer)
    reg = method.regressor
    assert isinstance(reg, ConvReg) and type(reg.conv) is kind
    assert (reg.conv.in_channels, reg.conv.out_channels) == (s_channels, t_channels)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f_s = student(images, is_feat=True)[0][layer]
        f_t = teacher(images, is_feat=True)[0][layer]
        assert reg.eval()(f_s).shape == f_t.shape


def test_fitnet_loss_is_hint_loss_of_regressed_map():
    method, student, teacher = build('hint', 'wrn_40_2', 'wrn_16_2', hint_layer=1)
    images = torch.randn(2, 3, 32, 32)
    out_s, out_t = (run_network(net, images, True, False) for net in (student, teacher))
    with torch.no_grad():
        regressed = method.regressor(out_s.feats[1]).double().numpy()
        expected = np_hint(regressed, out_t.feats[1].double().numpy())
        assert method.method_loss(out_s, out_t, None, 1).item() == pytest.approx(expected, rel=1e-5)


def test_rkd_refuses_one_image_per_process(monkeypatch):
    """--batch_size 1 is refused when parsed (test_distill_modern); in a job, each process's share counts."""
    from helper import distributed
    monkeypatch.setattr(distributed, '_CURRENT', distributed.Dist(rank=0, world_size=2))
    with pytest.raises(KDZooError, match=r'--batch_size 2 gives 1 to each of 2; pass --batch_size 4 or more'):
        build('rkd', 'wrn_40_2', 'wrn_16_2', batch_size=2)
    build('rkd', 'wrn_40_2', 'wrn_16_2', batch_size=4)


def test_rkd_batch_of_one_is_zero():
    method, student, teacher = build('rkd', 'wrn_40_2', 'wrn_16_2')
    images = torch.randn(1, 3, 32, 32)
    student.eval()
    out_s, out_t = (run_network(net, images, True, False) for net in (student, teacher))
    student.train()
    assert method.method_loss(out_s, out_t, None, 1).item() == 0


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('teacher_name, student_name, layer, message', [
    ('resnet32x4', 'resnet8x4', 5, r"--hint_layer 5 is out of range for the student, which has 5 feature"),
    ('resnet32x4', 'vgg13', -6, r"--hint_layer -6 is out of range for the teacher, which has 5 feature"),
    ('resnet32x4', 'resnet8x4', -1, r"--hint_layer -1 picks the student's pooled feature vector, not a "
                                    r"feature map; pick a map between 0 and 3"),
    ('resnet32x4', 'vgg13', 4, r"--hint_layer 4 picks the teacher's pooled feature vector"),
    ('resnet32x4', 'MobileNetV2', -2, r"ConvReg cannot map a student feature map of shape \(160, 2, 2\) onto "
                                      r"a teacher map of shape \(256, 8, 8\)"),
])
def test_fitnet_bad_hint_layer(teacher_name, student_name, layer, message):
    with pytest.raises(KDZooError, match=message):
        build('hint', teacher_name, student_name, hint_layer=layer)
