"""Helper modules that distillation methods attach to a student (RepDistiller's ``models/util.py``)."""
import torch.nn as nn

from helper.errors import KDZooError

__all__ = ['ConvReg']


class ConvReg(nn.Module):
    """FitNet's regressor from a student map onto a teacher map: conv, BatchNorm, then ReLU (``use_relu``).

    ``s_shape``/``t_shape`` are (N, C, H, W) shapes. The conv is chosen by the heights, as in RepDistiller:
    H_s = 2 H_t: 3x3 stride-2 conv; 2 H_s = H_t: 4x4 stride-2 transposed conv; H_s >= H_t: a conv of
    kernel (1 + H_s - H_t, 1 + W_s - W_t). Any other pair (RepDistiller: NotImplementedError), or one whose
    widths do not follow the same rule, raises KDZooError.
    """

    def __init__(self, s_shape, t_shape, use_relu=True):
        super().__init__()
        self.use_relu = use_relu
        _, s_c, s_h, s_w = s_shape
        _, t_c, t_h, t_w = t_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
            out_w = (s_w - 1) // 2 + 1
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
            out_w = 2 * s_w
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
            out_w = t_w
        else:
            out_w = None
        if out_w != t_w:
            raise KDZooError(f"ConvReg cannot map a student feature map of shape {tuple(s_shape)[1:]} onto "
                             f"a teacher map of shape {tuple(t_shape)[1:]} (the student map must be half the "
                             f"teacher's size, twice it, or at least as large); pick another layer or pair")
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.relu(x) if self.use_relu else x
