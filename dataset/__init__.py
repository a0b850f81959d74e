"""Data sets for training: every loader yields Batches already on the device.

``build_data`` is the one entry point. The training loader's ``set_epoch(epoch)`` fixes the epoch's
shuffle, augmentation and CRD sampling as a function of (seed, epoch) alone, so a resumed run sees
exactly the batches an uninterrupted one would.
"""
import torch

from helper.errors import KDZooError
from .batches import Batch, ContrastSpec, DataBundle
from .cifar10 import build_cifar10
from .cifar100 import build_cifar100
from .digits import build_digits
from .imagenet import build_dali_data, build_imagenet

DATASETS = ('cifar100', 'cifar10', 'digits', 'imagenet')


def build_data(name, data_folder, batch_size, device, *, num_workers=8, seed=0, train_sample=None,
               drop_last=False, channels_last=False, download=True, val_batch_size=None, strong_view=False,
               dali=None, rank=0, world_size=1):
    """Train and validation loaders of data set ``name``; ``train_sample`` (a ContrastSpec) adds CRD rows,
    ``strong_view`` NTCE-KD's strongly augmented copy of each training batch,
    ``dali`` ('gpu' or 'cpu') reads ImageNet folders with NVIDIA DALI.

    ``batch_size`` is the global batch. With ``world_size`` > 1 the loaders yield process ``rank``'s share:
    its slice of every global batch (the images, augmentation and CRD rows one process would draw for that
    batch; with DALI, a contiguous shard of the epoch) and its part of the validation set."""
    if name not in DATASETS:
        raise KDZooError(f"unknown data set '{name}' for --dataset; choose one of {', '.join(DATASETS)}")
    if batch_size < 1:
        raise KDZooError(f"--batch_size must be at least 1, got {batch_size}")
    if seed < 0:
        raise KDZooError(f"--seed must be zero or positive, got {seed}")
    if world_size > 1 and batch_size % world_size:
        raise KDZooError(f"--batch_size {batch_size} must split evenly over {world_size} processes")
    if dali and name != 'imagenet':
        raise KDZooError(f"--dali reads ImageNet folders; {name} is already decoded in memory, drop --dali")
    options = dict(batch_size=batch_size, val_batch_size=val_batch_size or max(batch_size, 256),
                   device=torch.device(device), seed=seed, train_sample=train_sample, drop_last=drop_last,
                   channels_last=channels_last)
    if world_size > 1:  # only then, so that single-process calls stay exactly as they were
        options.update(rank=rank, world_size=world_size)
    if name == 'cifar100':
        return build_cifar100(data_folder, download=download, strong_view=strong_view, **options)
    if name == 'cifar10':
        return build_cifar10(data_folder, download=download, strong_view=strong_view, **options)
    if name == 'digits':
        return build_digits(strong_view=strong_view, **options)
    if dali:
        return build_dali_data(data_folder, mode=dali, num_threads=max(num_workers, 1), strong_view=strong_view,
                               **options)
    return build_imagenet(data_folder, num_workers=num_workers, strong_view=strong_view, **options)


__all__ = ['DATASETS', 'Batch', 'ContrastSpec', 'DataBundle', 'build_data']
