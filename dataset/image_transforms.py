"""The ImageNet training and validation crops on PIL images, following torchvision's algorithms.

Randomness comes from a numpy Generator passed in, so a caller that seeds it per image and epoch
gets the same crops whenever it replays that epoch.
"""
import math

import numpy as np
import torch
from PIL import Image

# ImageNet's per-channel mean and standard deviation on [0, 1] pixels (torchvision's), which both readers
# (dataset/imagenet.py, dataset/imagenet_dali.py) normalise with
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CROP = 224
RESIZE = 256
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10


def random_resized_crop_box(width, height, rng, scale=SCALE, ratio=RATIO):
    """(top, left, crop_height, crop_width) covering a random area fraction and aspect ratio of the image.

    Tries ATTEMPTS random (area, log-uniform aspect) pairs; if none fits inside the image, falls back
    to the largest centred crop whose aspect ratio lies within ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(ATTEMPTS):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_width = int(round(math.sqrt(target_area * aspect)))
        crop_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return top, left, crop_height, crop_width
    if width / height < min(ratio):
        crop_width, crop_height = width, int(round(width / min(ratio)))
    elif width / height > max(ratio):
        crop_width, crop_height = int(round(height * max(ratio))), height
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def train_crop(image, rng):
    """RandomResizedCrop(224) with bilinear resizing, then a horizontal flip with probability 0.5."""
    top, left, crop_height, crop_width = random_resized_crop_box(image.width, image.height, rng)
    image = image.crop((left, top, left + crop_width, top + crop_height))
    image = image.resize((CROP, CROP), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def val_crop(image):
    """Resize the shorter side to 256 (bilinear, aspect kept), then take the centred 224x224 square."""
    width, height = image.size
    if width <= height:
        size = (RESIZE, int(RESIZE * height / width))
    else:
        size = (int(RESIZE * width / height), RESIZE)
    image = image.resize(size, Image.Resampling.BILINEAR)
    top = int(round((size[1] - CROP) / 2))
    left = int(round((size[0] - CROP) / 2))
    return image.crop((left, top, left + CROP, top + CROP))


def to_uint8_chw(image):
    """An RGB PIL image as a (3, H, W) uint8 tensor; normalisation happens later, on the device."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy())
