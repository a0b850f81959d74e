"""MGD: Yang et al., "Masked Generative Distillation" (ECCV 2022), as yzd-v/MGD's classification code
(``cls/mmcls/distillation/losses/mgd.py``, ``cls/configs/distillers/mgd/*.py``).

The student's last stage map (``feats[-2]``, the backbone output mmcls's distiller reads) is aligned to the
teacher's channels by a 1x1 conv (with bias; none when the channel counts agree), randomly masked, and a
generation block (3x3 conv, ReLU, 3x3 conv, all at the teacher's width, with bias) must regenerate the
teacher's map from it: the squared error summed over all elements and divided by the batch size. The two
maps must have one spatial size (the code asserts it).

Mask: the classification code masks whole channels, a (B, C, 1, 1) draw u ~ U[0, 1) with the channels where
u < --mgd_lambda set to 0 (its spatial line is commented out); ``--mgd_mask spatial`` is the detection and
segmentation code's (B, 1, H, W) mask, zero where u > 1 - lambda, the form the paper describes.

Randomness: the code draws the mask from torch's global generator. Here each step's mask comes from a
generator of its own, seeded by (the run's seed, epoch, step of the epoch), drawn on the CPU as the code
draws it and then moved to the device. So the masks depend on nothing else that draws random numbers, are
the same on every device type, a pack member draws exactly its single run's masks, and a resumed run (which
restarts at an epoch boundary) redraws the same ones. In a multi-process job every process draws the mask of
the whole global batch and keeps the rows of its own share (the share sizes are gathered each step), as the
loaders draw crops: N processes mask exactly what one process masks (tests/test_distributed_methods.py).

Defaults, the published ImageNet configs (``res34_distill_res18_img.py``, ``res50_distill_mv1_img.py``):
alpha_mgd 7e-5, which is -b here, lambda_mgd 0.15, CE weight 1 (-r 1 -a 0 -b 0.00007). The
ResNet50 -> MobileNetV1 config also clips gradients at norm 5, which kdzoo does not. The authors publish
no CIFAR-100 recipe: the same loss, mask and weights on CIFAR are our choice.
"""
import torch
import torch.nn as nn

from dataset.batches import StepDraws, step_seed
from helper import distributed
from helper.errors import KDZooError
from helper.precision import full_precision
from .base import Distiller
from .registry import register

__all__ = ['MGDGenerator', 'draw_mask', 'mgd_loss', 'step_generator', 'MGD']

# A stream number of its own, so that no data-set stream (dataset/batches.py) shares the mask's entropy.
MASK_STREAM = 101


def step_generator(seed, epoch, step):
    """A CPU generator whose draws depend only on (seed, epoch, step)."""
    return torch.Generator().manual_seed(step_seed(seed, epoch, MASK_STREAM, step))


def draw_mask(shape, ratio, mode, generator):
    """MGD's 0/1 mask for a (B, C, H, W) map: 'channel' (B, C, 1, 1), 0 where u < ``ratio`` (the classification
    code); 'spatial' (B, 1, H, W), 0 where u > 1 - ``ratio`` (the detection and segmentation code); float32, CPU."""
    n, c, h, w = shape
    if mode == 'channel':
        return (torch.rand((n, c, 1, 1), generator=generator) >= ratio).float()
    return (torch.rand((n, 1, h, w), generator=generator) <= 1 - ratio).float()


class MGDGenerator(nn.Module):
    """The student's side of MGD: ``align`` (1x1 conv with bias, s_n -> t_n; None when they agree) and
    ``generation`` (3x3 conv, ReLU, 3x3 conv at t_n, with bias), named as in the official ``MGDLoss``."""

    def __init__(self, s_n, t_n):
        super().__init__()
        self.align = nn.Conv2d(s_n, t_n, kernel_size=1, stride=1, padding=0) if s_n != t_n else None
        self.generation = nn.Sequential(nn.Conv2d(t_n, t_n, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                                        nn.Conv2d(t_n, t_n, kernel_size=3, padding=1))

    def forward(self, f_s, mask):
        """The map generated from the aligned student map ``f_s`` times ``mask``."""
        if self.align is not None:
            f_s = self.align(f_s)
        return self.generation(f_s * mask)


@full_precision
def mgd_loss(generated, f_t):
    """Sum of squared errors of the generated map against the teacher's, divided by the batch size (before
    alpha_mgd), in fp32 at least."""
    return (generated - f_t).pow(2).sum() / f_t.shape[0]


@register('mgd')
class MGD(Distiller):
    """gamma * CE + alpha * KD + beta * MGD(generation(align(student feats[-2]) * mask), teacher feats[-2]);
    defaults CE 1, -b 0.00007 (alpha_mgd), --mgd_lambda 0.15, --mgd_mask channel (the cls configs')."""
    needs_feats = True
    default_weights = (1.0, 0.0, 7e-5)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        shape_s, shape_t = probe_s.feats[-2].shape, probe_t.feats[-2].shape
        if shape_s[2:] != shape_t[2:]:
            raise KDZooError(f"MGD regenerates the teacher's last map from the student's at the same size, but the "
                             f"student's is {shape_s[2]}x{shape_s[3]} and the teacher's {shape_t[2]}x{shape_t[3]}; "
                             f"pick a pair whose last stage maps agree in size")
        self.generator = MGDGenerator(shape_s[1], shape_t[1])
        self.ratio, self.mode = args.mgd_lambda, args.mgd_mask
        self.draws = StepDraws(data, args, MASK_STREAM)

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('MGD')
        group.add_argument('--mgd_lambda', type=float, default=0.15,
                           help='fraction masked, lambda_mgd (0.15, the official classification configs)')
        group.add_argument('--mgd_mask', choices=('channel', 'spatial'), default='channel',
                           help="mask whole channels (the official classification code) or positions (its "
                                "detection/segmentation code, the paper's form)")

    @staticmethod
    def settings(args):
        if not 0 <= args.mgd_lambda < 1:
            raise KDZooError(f"--mgd_lambda is the fraction of the map masked, from 0 up to but not including 1, "
                             f"got {args.mgd_lambda:g}")

    def next_mask(self, shape, epoch, device):
        """This step's mask: the generator of (seed, epoch, step) with the step counted within the epoch; in a
        multi-process job, this process's rows of the global batch's mask."""
        generator = torch.Generator().manual_seed(self.draws.next_seed(epoch))
        rows = slice(None)
        if distributed.current().enabled:  # the share sizes of every process, in rank order
            sizes = distributed.all_gather_step(torch.tensor([shape[0]], device=device)).tolist()
            start = sum(sizes[:distributed.current().rank])
            rows, shape = slice(start, start + shape[0]), (sum(sizes), *shape[1:])
        return draw_mask(shape, self.ratio, self.mode, generator)[rows].to(device)

    def method_loss(self, out_s, out_t, batch, epoch):
        f_s, f_t = out_s.feats[-2], out_t.feats[-2]
        mask = self.next_mask(f_t.shape, epoch, f_s.device)
        return mgd_loss(self.generator(f_s, mask.to(f_s.dtype)), f_t)
