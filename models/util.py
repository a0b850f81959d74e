"""Helper modules that distillation methods attach to a student (RepDistiller's and the SimKD repo's
``models/util.py``: their class names, constructor arguments and forward outputs).

RepDistiller's FT and AB modules (``Paraphraser``, ``Translator``, ``Connector``) are defined here, where its
scripts import them from, and distiller_zoo's FT.py and AB.py import them from here: a model-side module
never reaches up into the methods."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from helper.precision import at_least_fp32

__all__ = ['ConvReg', 'Connector', 'Paraphraser', 'Translator', 'Proj', 'MLPEmbed', 'SelfA', 'SRRL', 'SimKD']


class ConvReg(nn.Module):
    """FitNet's regressor from a student map onto a teacher map: conv, BatchNorm, then ReLU (``use_relu``).

    ``s_shape``/``t_shape`` are (N, C, H, W) shapes. The conv is chosen by the heights, as in RepDistiller:
    H_s = 2 H_t: 3x3 stride-2 conv; 2 H_s = H_t: 4x4 stride-2 transposed conv; H_s >= H_t: a conv of
    kernel (1 + H_s - H_t, 1 + W_s - W_t). A pair whose widths do not follow the same rule raises KDZooError.

    Two callers, two forwards: RepDistiller's ``forward(x)`` returns the regressed map; the SimKD repo's
    ``forward(x, t)`` returns the pair (regressed map, target). The SimKD repo also takes any other smaller
    student map (RepDistiller: NotImplementedError): a 3x3 same-size conv, the teacher's map then average-
    pooled to the student's size, so that case needs ``forward(x, t)``. ``pool_target=False`` refuses it at
    construction instead (kdzoo's FitNet and AB, which follow RepDistiller).
    """

    def __init__(self, s_shape, t_shape, use_relu=True, pool_target=True):
        super().__init__()
        self.use_relu = use_relu
        _, s_c, s_h, s_w = s_shape
        _, t_c, t_h, t_w = t_shape
        self.pool_to = None
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
            out_w = (s_w - 1) // 2 + 1
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
            out_w = 2 * s_w
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
            out_w = t_w
        elif pool_target and s_h < t_h and s_w <= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=1, padding=1)
            self.pool_to = (s_h, s_w)
            out_w = t_w  # the target is pooled to the output, so every width fits
        else:
            out_w = None
        if out_w != t_w:
            raise KDZooError(f"ConvReg cannot map a student feature map of shape {tuple(s_shape)[1:]} onto "
                             f"a teacher map of shape {tuple(t_shape)[1:]} (the student map must be half the "
                             f"teacher's size, twice it, or at least as large); pick another layer or pair")
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, t=None):
        x = self.bn(self.conv(x))
        x = self.relu(x) if self.use_relu else x
        if t is None:
            if self.pool_to is not None:
                raise KDZooError(f"this ConvReg maps a smaller student map onto a larger teacher map by pooling "
                                 f"the teacher's to {self.pool_to}; call it as regress(f_s, f_t), which returns "
                                 f"both (the SimKD repo's form)")
            return x
        if self.pool_to is not None:
            t = F.adaptive_avg_pool2d(t, self.pool_to)
        return x, t


class MapwiseModules(nn.Module):
    """One module per map, in ``connectors``, applied to a list of maps pair by pair: ``forward(g_s)`` ->
    ``[connectors[i](g_s[i]) ...]`` (AB's and OFD's connectors; the name is their state-dict prefix)."""

    def __init__(self, connectors):
        super().__init__()
        self.connectors = nn.ModuleList(connectors)

    def forward(self, g_s):
        return [connect(f) for connect, f in zip(self.connectors, g_s)]


def check_one_to_one(method, s_shapes, t_shapes, advice):
    """Refuse, in one line ending in ``advice``, student and teacher map lists that cannot be paired one to one
    (AB's connectors and FSP's flow matrices need a teacher map for every student map)."""
    if len(s_shapes) != len(t_shapes):
        raise KDZooError(f"{method} pairs the student's feature maps with the teacher's one to one, but the student "
                         f"has {len(s_shapes)} and the teacher {len(t_shapes)}; {advice}")


class Connector(MapwiseModules):
    """RepDistiller's AB connector, ``Connector(s_shapes, t_shapes)(g_s)``: per layer, identity when channels
    and height match the teacher's, else FitNet's ``ConvReg`` without its ReLU (conv + BN)."""

    def __init__(self, s_shapes, t_shapes):
        check_one_to_one('AB', s_shapes, t_shapes, 'pick a student and teacher with the same number of stages')
        super().__init__(
            nn.Identity() if s[1] == t[1] and s[2] == t[2] else ConvReg(s, t, use_relu=False, pool_target=False)
            for s, t in zip(s_shapes, t_shapes))


def _conv_stack(conv, widths, use_bn):
    """3x3 same-size convs between consecutive widths, each followed by BN (or nothing) and LeakyReLU(0.1);
    the layer indices match RepDistiller's, so its state dicts load."""
    layers = []
    for c_in, c_out in zip(widths, widths[1:]):
        layers += [conv(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out) if use_bn else nn.Identity(),
                   nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Teacher-side auto-encoder: C -> C -> kC -> kC convs, then kC -> kC -> C -> C transposed convs.

    ``forward(f, is_factor=False)`` returns ``(factor, reconstruction)``, or the factor alone."""

    def __init__(self, t_shape, k=0.5, use_bn=False):
        super().__init__()
        channels, factor_channels = t_shape[1], int(t_shape[1] * k)
        widths = [channels, channels, factor_channels, factor_channels]
        self.encoder = _conv_stack(nn.Conv2d, widths, use_bn)
        self.decoder = _conv_stack(nn.ConvTranspose2d, widths[::-1], use_bn)

    def forward(self, f_s, is_factor=False):
        factor = self.encoder(f_s)
        if is_factor:
            return factor
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Student-side encoder: C_s -> C_s -> kC_t -> kC_t convs with BN, so its factor matches the
    paraphraser's."""

    def __init__(self, s_shape, t_shape, k=0.5, use_bn=True):
        super().__init__()
        factor_channels = int(t_shape[1] * k)
        self.encoder = _conv_stack(nn.Conv2d, [s_shape[1], s_shape[1], factor_channels, factor_channels],
                                   use_bn)

    def forward(self, f_s):
        return self.encoder(f_s)


def _conv1x1(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


def _conv3x3(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


def _align_maps(feat_s, feat_t):
    """Average-pool whichever of two maps is taller down to the other's size (the SimKD repo's rule)."""
    if feat_s.shape[2] > feat_t.shape[2]:
        return F.adaptive_avg_pool2d(feat_s, feat_t.shape[2:]), feat_t
    if feat_s.shape[2:] == feat_t.shape[2:]:
        return feat_s, feat_t
    return feat_s, F.adaptive_avg_pool2d(feat_t, feat_s.shape[2:])


class Proj(nn.Module):
    """SemCKD's regressor from one student map to one teacher map: 1x1 conv to 2 C_t, BN, ReLU, 3x3 conv,
    BN, ReLU, 1x1 conv to C_t, no biases (the SimKD repo's ``Proj``)."""

    def __init__(self, num_input_channels=1024, num_target_channels=128):
        super().__init__()
        mid = 2 * num_target_channels
        self.regressor = nn.Sequential(
            _conv1x1(num_input_channels, mid), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            _conv3x3(mid, mid), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            _conv1x1(mid, num_target_channels))

    def forward(self, x):
        return self.regressor(x)


class MLPEmbed(nn.Module):
    """SemCKD's query/key embedding: Linear to 2 dim_out, ReLU, Linear to dim_out, rows L2-normalised.
    (The SimKD repo's class also builds an unused ``regressor`` branch; it is left out here.)"""

    def __init__(self, dim_in=1024, dim_out=128):
        super().__init__()
        self.linear1 = nn.Linear(dim_in, 2 * dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(2 * dim_out, dim_out)

    def forward(self, x):
        x = self.relu(self.linear1(x.flatten(1)))
        return F.normalize(self.linear2(x), dim=1)


class SelfA(nn.Module):
    """SemCKD's cross-layer attention (the SimKD repo's ``SelfA(feat_dim, s_n, t_n, soft, factor=4)``).

    ``feat_dim`` is the batch size: each layer's B x B similarity matrix of the flattened maps is embedded
    row by row (``query_i`` for student layer i, ``key_j`` for teacher layer j), and
    ``softmax_j(<q_i, k_j> / soft)`` weighs, per sample, how much student layer i learns from teacher
    layer j. ``regressor{i}{j}`` maps student map i onto teacher map j after pooling the taller of the two.
    ``forward(feat_s, feat_t)`` returns ``(proj_value_stu, value_tea, attention)``: nested lists [i][j] of
    regressed student maps and their targets, and the B x n_s x n_t attention. The similarities and
    embeddings are computed in fp32 (in fp16 the B x B sums overflow). A batch of another size is an error.
    """

    def __init__(self, feat_dim, s_n, t_n, soft, factor=4):
        super().__init__()
        self.feat_dim = feat_dim
        self.soft = soft
        self.s_len, self.t_len = len(s_n), len(t_n)
        for i in range(self.s_len):
            self.add_module(f'query_{i}', MLPEmbed(feat_dim, feat_dim // factor))
        for j in range(self.t_len):
            self.add_module(f'key_{j}', MLPEmbed(feat_dim, feat_dim // factor))
        for i in range(self.s_len):
            for j in range(self.t_len):
                self.add_module(f'regressor{i}{j}', Proj(s_n[i], t_n[j]))

    def forward(self, feat_s, feat_t):
        for feat in (*feat_s, *feat_t):
            if feat.shape[0] != self.feat_dim:
                raise KDZooError(f"SemCKD's attention was built for batches of {self.feat_dim} images (its "
                                 f"embeddings read {self.feat_dim}x{self.feat_dim} similarity matrices) but got "
                                 f"a batch of {feat.shape[0]}; train with that --batch_size and drop_last")
        with torch.autocast(feat_s[0].device.type, enabled=False):
            query = torch.stack([getattr(self, f'query_{i}')(_similarity(f)) for i, f in enumerate(feat_s)], 1)
            key = torch.stack([getattr(self, f'key_{j}')(_similarity(f)) for j, f in enumerate(feat_t)], 2)
            attention = F.softmax(torch.bmm(query, key) / self.soft, dim=-1)
        proj_value_stu, value_tea = [], []
        for i in range(self.s_len):
            pairs = [_align_maps(feat_s[i], feat_t[j]) for j in range(self.t_len)]
            proj_value_stu.append([getattr(self, f'regressor{i}{j}')(source) for j, (source, _) in enumerate(pairs)])
            value_tea.append([target for _, target in pairs])
        return proj_value_stu, value_tea, attention


def _similarity(feat):
    flat = feat.reshape(feat.shape[0], -1)
    flat = at_least_fp32(flat)
    return flat @ flat.t()


class SRRL(nn.Module):
    """SRRL's transfer (the SimKD repo's ``SRRL(s_n=, t_n=)``): the student's pooled feature, seen as a 1x1
    map, through 1x1 conv (no bias), BN and ReLU to the teacher's width. ``forward(feat_s, cls_t)`` returns
    the transferred feature and the logits the teacher's classifier ``cls_t`` gives for it."""

    def __init__(self, *, s_n, t_n):
        super().__init__()
        self.transfer = nn.Sequential(_conv1x1(s_n, t_n), nn.BatchNorm2d(t_n), nn.ReLU(inplace=True))

    def forward(self, feat_s, cls_t):
        trans_feat_s = self.transfer(feat_s[:, :, None, None]).flatten(1)
        return trans_feat_s, cls_t(trans_feat_s)


class SimKD(nn.Module):
    """SimKD's projector (the SimKD repo's ``SimKD(s_n=, t_n=, factor=2)``): a bottleneck of 1x1 conv to
    t_n // factor, 3x3 conv, 1x1 conv to t_n, each followed by BN and ReLU, no conv biases.

    ``forward(feat_s, feat_t, cls_t)`` pools the taller of the two last maps to the other's size, projects
    the student's, and returns ``(trans_feat_s, trans_feat_t, pred_feat_s)``: the projected map, its target
    and the logits of ``cls_t`` (the teacher's classifier) on the projected map's average.
    ``predict(feat_s, cls_t, pool_to)`` gives the same logits without the teacher's map: ``pool_to`` is
    the teacher map's (H, W) when it is smaller than the student's (the only case where it matters), else None.
    """

    def __init__(self, *, s_n, t_n, factor=2):
        super().__init__()
        mid = t_n // factor
        if mid < 1:
            raise KDZooError(f"SimKD's projector factor {factor} leaves no channels of the teacher's {t_n}; "
                             f"pick a factor between 1 and {t_n}")
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.transfer = nn.Sequential(
            _conv1x1(s_n, mid), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            _conv3x3(mid, mid), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            _conv1x1(mid, t_n), nn.BatchNorm2d(t_n), nn.ReLU(inplace=True))

    def forward(self, feat_s, feat_t, cls_t):
        source, target = _align_maps(feat_s, feat_t)
        trans_feat_s = self.transfer(source)
        return trans_feat_s, target, self._classify(trans_feat_s, cls_t)

    def predict(self, feat_s, cls_t, pool_to=None):
        source = feat_s if pool_to is None else F.adaptive_avg_pool2d(feat_s, pool_to)
        return self._classify(self.transfer(source), cls_t)

    def _classify(self, trans_feat_s, cls_t):
        return cls_t(self.avg_pool(trans_feat_s).flatten(1))
