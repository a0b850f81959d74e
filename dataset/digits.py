"""scikit-learn's 8x8 handwritten digits as a tiny built-in 32x32 RGB data set (no download).

The 1797 images are scaled from 0..16 to 0..255, enlarged 4x by nearest neighbour (each pixel becomes
a 4x4 block), copied into 3 channels and split 80/20, stratified by class with a fixed seed: 1437
training and 360 test images, 10 classes.
"""
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .memory import in_memory_bundle

NUM_CLASSES = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_split():
    """(train_images, train_labels, test_images, test_labels): NHWC uint8 and int64 tensors."""
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    pixels = pixels.repeat(4, axis=1).repeat(4, axis=2)
    images = np.repeat(pixels[..., None], 3, axis=3)
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels,
                                   random_state=SPLIT_SEED)
    train, test = np.sort(train), np.sort(test)  # keep the original order inside each split
    return (torch.from_numpy(images[train]), torch.from_numpy(labels[train]),
            torch.from_numpy(images[test]), torch.from_numpy(labels[test]))


def build_digits(**loader_options):
    """DataBundle of the digits; mean and std per channel come from the training split."""
    train_images, train_labels, test_images, test_labels = digits_split()
    scaled = train_images.double() / 255
    mean = tuple(scaled.mean(dim=(0, 1, 2)).tolist())
    std = tuple(scaled.std(dim=(0, 1, 2), correction=0).tolist())
    return in_memory_bundle(train_images, train_labels, test_images, test_labels, NUM_CLASSES, mean, std,
                            **loader_options)
