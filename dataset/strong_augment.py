"""NTCE-KD's strong view, computed for a whole uint8 batch on its device: no PIL, no per-image loop.

Each image, cropped and flipped by the loader (with its own draws, not the weak view's), takes two
operations drawn uniformly with replacement from the 14 of the NTCE-KD code's ``augment_list``, each
with a magnitude uniform over that operation's range, then Cutout. Every operation reproduces its PIL
counterpart (Pillow's ImageOps / ImageEnhance / Image.transform with nearest sampling and black fill)
in closed form per image, so one step handles all images whatever each of them drew:

- geometric ops (Rotate, ShearX/Y, TranslateX/Y) are one gather through a per-image affine map,
- AutoContrast, Equalize, Posterize and Solarize are one gather through a per-image, per-channel
  256-entry lookup table,
- Brightness, Color, Contrast and Sharpness are one blend ``trunc(d + f * (x - d))`` with a
  per-image degenerate image ``d`` (black, grey, mean grey, smoothed), as ``Image.blend`` computes it,

and an image whose draw is in another group passes each stage unchanged (identity map, identity
table, no blend). On a GPU the whole batch goes through every stage, so nothing waits for the device;
on the CPU each stage takes only its own images (``apply_ops``).

Cutout follows the reference's ``CutoutAbs``: side ``v = U[0, 0.5) * width``, centre drawn as
``np.random.uniform(w)`` does, i.e. uniform on [1, w] (low=w, high=1.0), corners truncated to ints and
the rectangle filled inclusively with (125, 123, 114), as ``ImageDraw.rectangle`` does.
"""
import functools

import torch

# (name, low, high): the operations and magnitude ranges of the reference's augment_list, in its order.
OPS = (
    ('AutoContrast', 0.0, 1.0),
    ('Brightness', 0.05, 0.95),
    ('Color', 0.05, 0.95),
    ('Contrast', 0.05, 0.95),
    ('Equalize', 0.0, 1.0),
    ('Identity', 0.0, 1.0),
    ('Posterize', 4.0, 8.0),
    ('Rotate', -30.0, 30.0),
    ('Sharpness', 0.05, 0.95),
    ('ShearX', -0.3, 0.3),
    ('ShearY', -0.3, 0.3),
    ('Solarize', 0.0, 256.0),
    ('TranslateX', -0.3, 0.3),
    ('TranslateY', -0.3, 0.3),
)
OP_INDEX = {name: k for k, (name, _, _) in enumerate(OPS)}
GEOMETRIC_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
TABLE_OPS = ('AutoContrast', 'Equalize', 'Posterize', 'Solarize')
BLEND_OPS = ('Brightness', 'Color', 'Contrast', 'Sharpness')
NUM_OPS = 2  # operations per image
CUTOUT_MAX = 0.5  # largest Cutout side, as a fraction of the image width
CUTOUT_FILL = (125, 123, 114)


@functools.lru_cache(maxsize=None)
def _constants(device):
    """Magnitude bounds per operation and the Cutout colour, made once per device (no copy per batch)."""
    low = torch.tensor([op[1] for op in OPS], device=device)
    high = torch.tensor([op[2] for op in OPS], device=device)
    return low, high, torch.tensor(CUTOUT_FILL, dtype=torch.uint8, device=device)


def draw_strong(count, width, height, generator, device):
    """The operations, magnitudes and Cutout boxes of ``count`` images, drawn from ``generator`` in a fixed
    order; ops (N, NUM_OPS) index OPS, mags (N, NUM_OPS) lie in their operation's range."""
    low, high, _ = _constants(device)
    ops = torch.randint(0, len(OPS), (count, NUM_OPS), generator=generator, device=device)
    mags = low[ops] + (high[ops] - low[ops]) * torch.rand(count, NUM_OPS, generator=generator, device=device)
    cut = torch.rand(count, 3, generator=generator, device=device)
    return dict(ops=ops, mags=mags, cut_side=cut[:, 0] * (CUTOUT_MAX * width),
                cut_x=width + (1 - width) * cut[:, 1],  # np.random.uniform(w) means low=w, high=1
                cut_y=height + (1 - height) * cut[:, 2])


def strong_augment(images, generator):
    """Two random operations and Cutout on each image of a cropped and flipped NHWC uint8 batch."""
    count, height, width, _ = images.shape
    draws = draw_strong(count, width, height, generator, images.device)
    for step in range(NUM_OPS):
        images = apply_ops(images, draws['ops'][:, step], draws['mags'][:, step])
    return cutout(images, draws['cut_side'], draws['cut_x'], draws['cut_y'])


def any_of(ops, names):
    """Mask of the images whose operation is one of ``names``."""
    mask = torch.zeros_like(ops, dtype=torch.bool)
    for name in names:
        mask |= ops == OP_INDEX[name]
    return mask


def apply_ops(images, ops, mags, subsets=None):
    """Image i (NHWC uint8) through operation ``OPS[ops[i]]`` at magnitude ``mags[i]``.

    Each stage below leaves the images of the other stages unchanged, so the whole batch can go through
    every stage (on a GPU: no wait for the device) or each stage can take only the images that drew it
    (``subsets``, the default on the CPU, where picking them costs nothing); the results are the same.
    """
    if subsets is None:
        subsets = images.device.type == 'cpu'
    for stage, names in STAGES:
        if not subsets:
            images = stage(images, ops, mags)
            continue
        chosen = any_of(ops, names).nonzero().squeeze(1)
        if len(chosen):
            images = images.index_copy(0, chosen, stage(images[chosen], ops[chosen], mags[chosen]))
    return images


def geometric(images, ops, mags):
    """Rotate, ShearX/Y and TranslateX/Y; other images unchanged."""
    return warp(images, affine_matrices(ops, mags, images.shape[1], images.shape[2]))


def affine_matrices(ops, mags, height, width):
    """(N, 2, 3) maps from output pixel centres to input coordinates, as PIL's AFFINE data; identity
    for images whose operation is not geometric."""
    count = len(ops)
    matrix = torch.zeros(count, 2, 3, dtype=torch.float64, device=ops.device)
    matrix[:, 0, 0] = matrix[:, 1, 1] = 1
    mags = mags.double()
    is_op = {name: ops == OP_INDEX[name] for name in GEOMETRIC_OPS}
    matrix[:, 0, 1] = torch.where(is_op['ShearX'], mags, matrix[:, 0, 1])
    matrix[:, 1, 0] = torch.where(is_op['ShearY'], mags, matrix[:, 1, 0])
    matrix[:, 0, 2] = torch.where(is_op['TranslateX'], mags * width, matrix[:, 0, 2])
    matrix[:, 1, 2] = torch.where(is_op['TranslateY'], mags * height, matrix[:, 1, 2])
    # Image.rotate(v): counter-clockwise by v degrees about (w/2, h/2); PIL rounds the terms to 15 digits.
    angle = -torch.deg2rad(mags)
    cos, sin = torch.cos(angle).round(decimals=15), torch.sin(angle).round(decimals=15)
    cx, cy = width / 2, height / 2
    rotation = torch.stack([torch.stack([cos, sin, -cos * cx - sin * cy + cx], 1),
                            torch.stack([-sin, cos, sin * cx - cos * cy + cy], 1)], 1)
    return torch.where(is_op['Rotate'][:, None, None], rotation, matrix)


def warp(images, matrix):
    """Nearest-neighbour affine resampling with black fill: output (x, y) reads input
    floor(matrix @ (x + 0.5, y + 0.5, 1)), as PIL's Image.transform(AFFINE, NEAREST)."""
    count, height, width, channels = images.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=images.device, dtype=torch.float64) + 0.5,
                            torch.arange(width, device=images.device, dtype=torch.float64) + 0.5, indexing='ij')
    centres = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(xs).view(-1)])
    src_x, src_y = (matrix @ centres).floor_().unbind(1)  # (N, H*W) each
    inside = (src_x >= 0) & (src_x < width) & (src_y >= 0) & (src_y < height)
    first_row = torch.arange(count, device=images.device, dtype=torch.float64)[:, None] * height
    # one extra black pixel after the batch stands for every position outside its image
    rows = torch.where(inside, (first_row + src_y) * width + src_x, count * height * width).long()
    padded = torch.cat([images.reshape(-1, channels), images.new_zeros(1, channels)])
    return padded.index_select(0, rows.view(-1)).view(count, height, width, channels)


def remap(images, ops, mags):
    """ImageOps' autocontrast, equalize, posterize and solarize: each channel of image i mapped through its
    own 256-entry table (the identity for images whose operation is none of these)."""
    count, height, width, channels = images.shape
    levels = torch.arange(256, device=images.device)
    # (image, channel, level) as one index into the flattened tables
    first_key = torch.arange(count * channels, device=images.device).view(count, 1, 1, channels) * 256
    keys = images.long().add_(first_key)
    histogram = torch.bincount(keys.view(-1), minlength=count * channels * 256).view(count, channels, 256)
    present = (histogram > 0).int()
    lo, hi = present.argmax(2), 255 - present.flip(2).argmax(2)

    # autocontrast (cutoff 0): int(v * scale + offset) clipped, identity when the channel is flat
    spread = (hi - lo).clamp(min=1).double()
    scale = torch.full_like(spread, 255.0) / spread  # not 255.0 / spread, which multiplies by a reciprocal
    stretched = (levels * scale[..., None] - (lo * scale)[..., None]).trunc().clamp(0, 255).long()
    autocontrast = torch.where((hi > lo)[..., None], stretched, levels)

    # equalize: step = (pixels - count of the top level) // 255, table n // step from n = step // 2
    step = (height * width - histogram.gather(2, hi[..., None])) // 255
    below = histogram.cumsum(2) - histogram
    equalized = ((step // 2 + below) // step.clamp(min=1)).clamp(max=255)
    equalize = torch.where(step > 0, equalized, levels)

    bits = mags.long().clamp(1, 8)
    posterize = levels & (256 - (1 << (8 - bits)))[:, None, None]
    solarize = torch.where(levels < mags[:, None, None], levels, 255 - levels)

    tables = levels.expand(count, channels, 256)
    for name, table in (('AutoContrast', autocontrast), ('Equalize', equalize), ('Posterize', posterize),
                        ('Solarize', solarize)):
        tables = torch.where((ops == OP_INDEX[name])[:, None, None], table, tables)
    return tables.to(torch.uint8).reshape(-1).take(keys)


def grey(images):
    """PIL's RGB to L conversion: (19595 R + 38470 G + 7471 B + 2^15) >> 16, as (N, H, W) int32."""
    r, g, b = images.int().unbind(3)
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def smooth(pixels):
    """PIL's ImageFilter.SMOOTH (kernel 1 1 1 / 1 5 1 / 1 1 1, divisor 13) on integer-valued float pixels
    (N, H, W, C) as (3x3 box + 4 x centre) / 13, rounded (never a tie), exact in float32; the one-pixel
    border is left as it is."""
    rows = pixels[:, :-2] + pixels[:, 1:-1] + pixels[:, 2:]
    total = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:] + 4 * pixels[:, 1:-1, 1:-1]
    out = pixels.clone()
    out[:, 1:-1, 1:-1] = total.div_(13).round_()
    return out


def blend_ops(images, ops, mags):
    """ImageEnhance's Brightness, Color, Contrast and Sharpness: Image.blend(degenerate, image, f), i.e.
    trunc(d + f * (x - d)) in float32. Other images get d = 0 and f = 1, which returns them exactly."""
    luma = grey(images)
    count, height, width = luma.shape
    mean = (2 * luma.view(count, -1).sum(1) + height * width) // (2 * height * width)  # int(mean + 0.5)
    pixels = images.float()

    def chosen(name):
        return (ops == OP_INDEX[name]).float()[:, None, None, None]
    degenerate = (chosen('Color') * luma.float()[..., None]  # Brightness: black
                  + chosen('Contrast') * mean.float()[:, None, None, None]
                  + chosen('Sharpness') * smooth(pixels))
    is_blend = any_of(ops, BLEND_OPS)
    factor = torch.where(is_blend, mags.float(), 1.0)[:, None, None, None]
    return pixels.sub_(degenerate).mul_(factor).add_(degenerate).clamp_(0, 255).to(torch.uint8)


def cutout(images, side, centre_x, centre_y):
    """Fill, per image, columns x0..int(x0 + side) and rows y0..int(y0 + side) (inclusive, clipped) with
    CUTOUT_FILL, where x0 = int(max(0, centre_x - side / 2)); images with side 0 are left alone."""
    _, height, width, _ = images.shape
    x0 = (centre_x - side / 2).clamp(min=0).long()
    y0 = (centre_y - side / 2).clamp(min=0).long()
    x1 = torch.minimum(x0 + side, torch.full_like(side, width)).long()
    y1 = torch.minimum(y0 + side, torch.full_like(side, height)).long()
    cols = torch.arange(width, device=images.device)
    rows = torch.arange(height, device=images.device)
    in_cols = (cols >= x0[:, None]) & (cols <= x1[:, None])
    in_rows = (rows >= y0[:, None]) & (rows <= y1[:, None])
    box = in_rows[:, :, None] & in_cols[:, None, :] & (side > 0)[:, None, None]
    return torch.where(box[..., None], _constants(images.device)[2], images)


STAGES = ((geometric, GEOMETRIC_OPS), (remap, TABLE_OPS), (blend_ops, BLEND_OPS))
