"""Data sets for training: every loader yields Batches already on the device.

``build_data`` is the one entry point. The training loader's ``set_epoch(epoch)`` fixes the epoch's
shuffle, augmentation and CRD sampling as a function of (seed, epoch) alone, so a resumed run sees
exactly the batches an uninterrupted one would.
"""
import torch

from helper.errors import KDZooError
from .batches import Batch, ContrastSpec, DataBundle
from .cifar100 import build_cifar100
from .digits import build_digits
from .imagenet import build_imagenet

DATASETS = ('cifar100', 'digits', 'imagenet')


def build_data(name, data_folder, batch_size, device, *, num_workers=8, seed=0, train_sample=None,
               drop_last=False, channels_last=False, download=True, val_batch_size=None):
    """Train and validation loaders of data set ``name``; ``train_sample`` (a ContrastSpec) adds CRD rows."""
    if name not in DATASETS:
        raise KDZooError(f"unknown data set '{name}' for --dataset; choose one of {', '.join(DATASETS)}")
    if batch_size < 1:
        raise KDZooError(f"--batch_size must be at least 1, got {batch_size}")
    if seed < 0:
        raise KDZooError(f"--seed must be zero or positive, got {seed}")
    options = dict(batch_size=batch_size, val_batch_size=val_batch_size or max(batch_size, 256),
                   device=torch.device(device), seed=seed, train_sample=train_sample, drop_last=drop_last,
                   channels_last=channels_last)
    if name == 'cifar100':
        return build_cifar100(data_folder, download=download, **options)
    if name == 'digits':
        return build_digits(**options)
    return build_imagenet(data_folder, num_workers=num_workers, **options)


__all__ = ['DATASETS', 'Batch', 'ContrastSpec', 'DataBundle', 'build_data']
