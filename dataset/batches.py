"""What every data set hands the training loop, and the per-epoch random streams behind it."""
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from helper.errors import KDZooError

# Independent random streams within an epoch, so that switching CRD sampling or NTCE-KD's strong view
# on or off leaves the shuffle order and the augmentation of every image unchanged.
SHUFFLE_STREAM, AUGMENT_STREAM, CONTRAST_STREAM, STRONG_STREAM = 0, 1, 2, 3


@dataclass
class Batch:
    """One batch, every tensor on the training device."""
    images: torch.Tensor  # float32, normalised, NCHW, on the device
    targets: torch.Tensor  # int64 class labels
    indices: torch.Tensor  # int64 positions of the images in their data set
    contrast_idx: Optional[torch.Tensor] = None  # (B, k+1) int64: positive, then k negatives (CRD only)
    images_strong: Optional[torch.Tensor] = None  # the same images, strongly augmented (NTCE-KD only)

    def view(self, name):
        """The images of view ``name``: 'strong' (made by the loader when a method declares it) or
        'rotations' (SSKD's four rotated views, made here on the device); one line when there is none."""
        if name == 'rotations':
            return rotated_views(self.images)
        images = {'strong': self.images_strong}.get(name)
        if images is None:
            raise KDZooError(f"the batch has no '{name}' view: the method that reads it must declare it in its "
                             f"``views`` so that the loader makes it")
        return images


@dataclass
class DataBundle:
    """The loaders of a data set and the facts about its training split that the losses need."""
    train: Any  # iterable of Batch with __len__ and set_epoch(epoch)
    val: Any  # iterable of Batch with __len__; no augmentation, no shuffle
    num_classes: int
    num_train: int
    train_labels: torch.Tensor  # int64, CPU, in data-set index order
    fingerprint: Optional[dict] = None  # {'method', 'sha256'}: which data this was (``fingerprint_*``)


# Images of each split whose bytes enter a fingerprint: the first and the last few.
FINGERPRINT_IMAGES = 8


def fingerprint_arrays(train_images, train_labels, val_images, val_labels):
    """Fingerprint of an in-memory data set, cheap enough for every run: the shapes, every label of both
    splits, and the bytes of the first and last FINGERPRINT_IMAGES images of each split."""
    digest = hashlib.sha256()
    for images, labels in ((train_images, train_labels), (val_images, val_labels)):
        digest.update(f"{tuple(images.shape)}|{images.dtype}|".encode())
        digest.update(labels.to(torch.int64).cpu().contiguous().numpy().tobytes())
        k = FINGERPRINT_IMAGES
        ends = images[:k] if len(images) <= 2 * k else torch.cat([images[:k], images[-k:]])
        digest.update(ends.cpu().contiguous().numpy().tobytes())
    return dict(method=f'sha256 of shapes, all labels, first and last {FINGERPRINT_IMAGES} images per split',
                sha256=digest.hexdigest())


def fingerprint_files(root, train_samples, val_samples):
    """Fingerprint of an image-folder data set without reading the images: every file's path relative to
    ``root`` and its class, plus the byte sizes of the first and last FINGERPRINT_IMAGES files per split."""
    digest = hashlib.sha256()
    root = os.path.abspath(root)
    for samples in (train_samples, val_samples):
        digest.update(f"{len(samples)}|".encode())
        for path, label in samples:
            digest.update(f"{os.path.relpath(path, root)}|{label}\n".encode())
        k = FINGERPRINT_IMAGES
        for path, _ in (samples if len(samples) <= 2 * k else [*samples[:k], *samples[-k:]]):
            digest.update(f"{os.path.getsize(path)}|".encode())
    return dict(method=f'sha256 of relative paths and classes, sizes of first and last {FINGERPRINT_IMAGES} '
                       f'files per split', sha256=digest.hexdigest())


@dataclass(frozen=True)
class ContrastSpec:
    """CRD sample mode: k negatives per image.

    The positive is the image itself ('exact') or a uniformly random image of its class ('relax').
    """
    k: int
    mode: str = 'exact'

    def __post_init__(self):
        if self.mode not in ('exact', 'relax'):
            raise KDZooError(f"unknown CRD sample mode '{self.mode}'; use --mode exact or --mode relax")
        if self.k < 1:
            raise KDZooError(f"--nce_k must be at least 1, got {self.k}; pass a positive number of negatives")


def mixed_seed(*numbers):
    """One integer seed from ``numbers`` (seed, epoch, stream, ...): SeedSequence mixes them, so nearby seeds and
    epochs still give unrelated streams."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, np.uint64)[0])


def epoch_generator(seed, epoch, stream, device='cpu', rank=None):
    """A fresh generator whose draws depend only on (seed, epoch, stream), never on global RNG state;
    ``rank`` gives each process of a multi-process run a stream of its own (None: the single-process one)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(mixed_seed(seed, epoch, stream, *([] if rank is None else [rank])))
    return generator


def step_seed(seed, epoch, stream, step):
    """An integer seed that depends only on (seed, epoch, stream, step): a method's draws at one training step."""
    return mixed_seed(seed, epoch, stream, step)


class StepDraws:
    """The seeds of a method's random draws, one per training step: (the run's seed, epoch, ``stream``, the step
    within the epoch). They depend on nothing else that draws random numbers, so a pack member draws its single
    run's numbers, a resumed run (which restarts at an epoch boundary) redraws the uninterrupted run's, and every
    process of a job draws the same. The run's seed is the training loader's (a single run's and every pack
    member's); callers without a loader (``build_distiller``) get ``--seed``, else 0."""

    def __init__(self, data, args, stream):
        seed = getattr(getattr(data, 'train', None), 'seed', None)
        self.seed = int(seed if seed is not None else (getattr(args, 'seed', None) or 0))
        self.stream = stream
        self.epoch, self.step = None, 0  # the step counter restarts with every epoch

    def next_seed(self, epoch):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0
        self.step += 1
        return step_seed(self.seed, epoch, self.stream, self.step)


def normalise(images, mean, std):
    """uint8 pixels to float32 as ToTensor then Normalize do it; mean and std broadcast over the channel axis."""
    return images.float().div_(255).sub_(mean).div_(std)


VIEWS = 4  # SSKD's views: the image and its three rotations


def rotated_views(images):
    """(4B, C, H, W): every image followed by itself rotated by 90, 180 and 270 degrees counter-clockwise
    (``np.rot90`` on the HWC image, as the official loader), in the input's memory format."""
    if images.shape[-1] != images.shape[-2]:
        raise KDZooError(f"SSKD rotates the images by 90 degrees, which needs square ones; these are "
                         f"{images.shape[-2]}x{images.shape[-1]}")
    views = torch.stack([torch.rot90(images, k, dims=(2, 3)) for k in range(VIEWS)], dim=1).flatten(0, 1)
    if not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
        views = views.contiguous(memory_format=torch.channels_last)
    return views
