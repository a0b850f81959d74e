"""NTCE-KD's strong view: the batched on-device augmentation against the same operations per image in PIL.

Both sides turn the same CIFAR-100-sized uint8 images into strong views: crop (padding 4) and flip,
two of the 14 operations with random magnitudes, Cutout, normalisation to float. The PIL side is the
reference's per-image pipeline (what one DataLoader worker does per image; workers multiply it by at
most the number of cores), run in this process; the batched side is dataset/strong_augment.py as the
training loader calls it.

    python bench/bench_strong_aug.py                  # CPU
    python bench/bench_strong_aug.py --images 20000 --batch_size 256 --json bench/strong_aug_gpu.json
"""
import argparse
import random
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from dataset.batches import STRONG_STREAM, epoch_generator, normalise
from dataset.cifar100 import MEAN, STD
from dataset.memory import PAD, crop_flip, draw_crop_flip
from dataset.strong_augment import CUTOUT_FILL, CUTOUT_MAX, NUM_OPS, OPS, strong_augment
from results import save

# The reference's operations on a PIL image, by name; v is the magnitude drawn in the OPS range.
PIL_OPS = {
    'AutoContrast': lambda img, v: ImageOps.autocontrast(img),
    'Brightness': lambda img, v: ImageEnhance.Brightness(img).enhance(v),
    'Color': lambda img, v: ImageEnhance.Color(img).enhance(v),
    'Contrast': lambda img, v: ImageEnhance.Contrast(img).enhance(v),
    'Equalize': lambda img, v: ImageOps.equalize(img),
    'Identity': lambda img, v: img,
    'Posterize': lambda img, v: ImageOps.posterize(img, max(1, int(v))),
    'Rotate': lambda img, v: img.rotate(v),
    'Sharpness': lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
    'ShearX': lambda img, v: img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
    'ShearY': lambda img, v: img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
    'Solarize': lambda img, v: ImageOps.solarize(img, v),
    'TranslateX': lambda img, v: img.transform(img.size, Image.AFFINE, (1, 0, v * img.size[0], 0, 1, 0)),
    'TranslateY': lambda img, v: img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v * img.size[1])),
}


def pil_cutout(img, side, centre_x, centre_y):
    """The reference's CutoutAbs with its centre given: box from int(centre - side / 2), inclusive."""
    if side <= 0:
        return img
    w, h = img.size
    x0, y0 = int(max(0, centre_x - side / 2)), int(max(0, centre_y - side / 2))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), CUTOUT_FILL)
    return img


def pil_strong_view(image, rng, mean, std):
    """One strong view as the reference makes it: pad 4, random crop, flip, two ops, Cutout, ToTensor, Normalize."""
    img = ImageOps.expand(Image.fromarray(image), PAD, fill=0)
    dy, dx = rng.randint(0, 2 * PAD), rng.randint(0, 2 * PAD)
    img = img.crop((dx, dy, dx + image.shape[1], dy + image.shape[0]))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    for name, low, high in rng.choices(OPS, k=NUM_OPS):
        img = PIL_OPS[name](img, low + (high - low) * rng.random())
    w, h = img.size
    img = pil_cutout(img, rng.random() * CUTOUT_MAX * w, rng.uniform(w, 1.0), rng.uniform(h, 1.0))
    array = np.asarray(img, dtype=np.float32) / 255
    return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())


def time_pil(images, batch_size):
    rng = random.Random(0)
    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        torch.stack([pil_strong_view(image, rng, mean, std) for image in images[first:first + batch_size]])
    return len(images) / (time.perf_counter() - start)


def time_batched(images, batch_size, device):
    pixels = torch.from_numpy(images).to(device)
    mean, std = torch.tensor(MEAN, device=device), torch.tensor(STD, device=device)

    def epoch(number):
        generator = epoch_generator(0, number, STRONG_STREAM, device)
        for first in range(0, len(pixels), batch_size):
            indices = torch.arange(first, min(first + batch_size, len(pixels)), device=device)
            cropped = crop_flip(pixels, indices, *draw_crop_flip(len(indices), generator, device))
            normalise(strong_augment(cropped, generator), mean, std).permute(0, 3, 1, 2).contiguous()
    epoch(0)  # warm-up
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    epoch(1)
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=5000, help='CIFAR-sized random images, both sides')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--json', help='write the results here too')
    args = parser.parse_args()
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    images = np.random.default_rng(0).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    pil = time_pil(images, args.batch_size)
    batched = time_batched(images, args.batch_size, device)
    name = torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    result = dict(device=name, torch=torch.__version__, images=args.images, batch_size=args.batch_size,
                  pil_images_per_s=pil, batched_images_per_s=batched, speedup=batched / pil)
    print(f"strong view of {args.images} 32x32 images, batch {args.batch_size}, on {name}")
    print(f"  per-image PIL (one process):  {pil:9.0f} images/s")
    print(f"  batched on the device:        {batched:9.0f} images/s")
    print(f"  speed-up: {result['speedup']:.2f}x")
    return save(result, args.json)


if __name__ == '__main__':
    main()
