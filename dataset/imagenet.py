"""ImageNet-style folders, ``<root>/train/<class>/*`` and ``<root>/val/<class>/*``, read without torchvision.

PIL decodes and crops in DataLoader workers, which return uint8 tensors (a quarter of the bytes of
float32); conversion to float and normalisation happen on the device. With the strong view (NTCE-KD) the
workers also return a second, independent random-resized crop and flip of every training image, which
gets NTCE-KD's two random operations and Cutout on the device, for the whole batch at once
(dataset/strong_augment.py), as the reference's ``get_imagenet_train_transform_strong`` builds it.
"""
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from helper.errors import DatasetError
from .batches import (AUGMENT_STREAM, CONTRAST_STREAM, SHUFFLE_STREAM, STRONG_STREAM, Batch, DataBundle,
                      epoch_generator, fingerprint_files, normalise)
from .contrast import ContrastSampler
from .image_transforms import MEAN, STD, to_uint8_chw, train_crop, val_crop
from .imagenet_dali import build_dali_imagenet
from .strong_augment import strong_augment

EXTENSIONS = ('.jpeg', '.jpg', '.png')


def scan_image_folder(folder):
    """(class names, [(path, class index), ...]): class folders sorted by name give the indices; files sorted."""
    if not os.path.isdir(folder):
        raise DatasetError(f"image folder {folder} does not exist; put the images in {folder}/<class>/")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise DatasetError(f"{folder} has no class folders; put each class's images in {folder}/<class>/")
    samples = []
    for label, name in enumerate(classes):
        class_folder = os.path.join(folder, name)
        files = sorted(entry.name for entry in os.scandir(class_folder)
                       if entry.is_file() and entry.name.lower().endswith(EXTENSIONS))
        if not files:
            raise DatasetError(f"class folder {class_folder} has no .JPEG, .jpg or .png images; add some or "
                               f"remove the folder from both train/ and val/")
        samples.extend((os.path.join(class_folder, file), label) for file in files)
    return classes, samples


class ImageFolderDataset(Dataset):
    """Items are (uint8 CHW image, label, index). Training keys are (index, epoch, strong) triples, validation
    keys indices; with ``strong`` a training item also carries the strong view's own crop (uint8 CHW). The flag
    travels in the key, so workers already running (persistent ones) follow it when it is switched on."""

    def __init__(self, samples, train, seed=0):
        # Arrays rather than a list of tuples: workers forked from this process share them, where a
        # million Python objects would be copied into every worker as their reference counts change.
        self.paths = np.array([os.fsencode(path) for path, _ in samples])
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        self.train = train
        self.seed = seed

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, key):
        index, epoch, strong = key if self.train else (key, None, False)
        path = os.fsdecode(self.paths[index])
        try:
            with Image.open(path) as image:
                image = image.convert('RGB')
        except OSError as err:
            raise DatasetError(f"cannot decode image {path} ({err}); replace or delete the file") from err
        if not self.train:
            return to_uint8_chw(val_crop(image)), int(self.labels[index]), index
        # Seeding per (epoch, image) makes a crop independent of which worker loads the image.
        crop = to_uint8_chw(train_crop(image, np.random.default_rng([self.seed, epoch, AUGMENT_STREAM, index])))
        if not strong:
            return crop, int(self.labels[index]), index
        # the strong view's crop and flip are drawn apart from the weak view's, as the reference's second pipeline
        strong_crop = train_crop(image, np.random.default_rng([self.seed, epoch, STRONG_STREAM, index]))
        return crop, int(self.labels[index]), index, to_uint8_chw(strong_crop)


class EpochSampler(Sampler):
    """Shuffled (index, epoch, strong) keys; the order depends only on (seed, epoch)."""

    def __init__(self, size, seed):
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.strong = False  # ask the workers for the strong view's crop too

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.size

    def __iter__(self):
        order = torch.randperm(self.size, generator=epoch_generator(self.seed, self.epoch, SHUFFLE_STREAM))
        return iter([(index, self.epoch, self.strong) for index in order.tolist()])


class FolderLoader:
    """Batches from a DataLoader moved to the device, normalised there, with CRD rows and the strong view
    (``strong_view``, training only; may be switched on after construction) when asked."""

    def __init__(self, loader, device, *, sampler=None, seed=0, channels_last=False, contrast=None, rank=None):
        self.loader = loader
        self.rank = rank  # None in a single process
        self.device = device
        self.sampler = sampler
        self.seed = seed
        self.channels_last = channels_last
        self.contrast = contrast
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    @property
    def strong_view(self):
        return self.sampler is not None and self.sampler.strong

    @strong_view.setter
    def strong_view(self, on):
        if self.sampler is None:
            raise ValueError("only a training loader has a strong view")
        self.sampler.strong = bool(on)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        contrast_rng = strong_rng = None
        if self.contrast is not None:
            contrast_rng = epoch_generator(self.seed, self.epoch, CONTRAST_STREAM, self.device, rank=self.rank)
        if self.strong_view:  # the operations' draws; each process of a job draws from a stream of its own
            strong_rng = epoch_generator(self.seed, self.epoch, STRONG_STREAM, self.device, rank=self.rank)
        for pixels, targets, indices, *strong in self.loader:
            batch = Batch(self._to_device(pixels), targets.to(self.device, non_blocking=True),
                          indices.to(self.device, non_blocking=True))
            if self.contrast is not None:
                batch.contrast_idx = self.contrast.sample(batch.indices, batch.targets, contrast_rng)
            if strong:
                batch.images_strong = self._to_device(strong_view_nchw(strong[0].to(self.device), strong_rng))
            yield batch

    def _to_device(self, pixels):
        """uint8 NCHW to normalised float on the device (channels_last when asked)."""
        pixels = pixels.to(self.device, non_blocking=True)
        pixels = pixels.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return normalise(pixels, self.mean, self.std)


def strong_view_nchw(crops, generator):
    """NTCE-KD's operations and Cutout on a uint8 NCHW batch of crops (strong_augment works on NHWC)."""
    return strong_augment(crops.permute(0, 2, 3, 1).contiguous(), generator).permute(0, 3, 1, 2)


def scan_imagenet(data_folder):
    """(class names, train samples, val samples) of ``data_folder``'s train/ and val/, or one clear error."""
    root = os.path.abspath(data_folder)
    train_classes, train_samples = scan_image_folder(os.path.join(root, 'train'))
    val_classes, val_samples = scan_image_folder(os.path.join(root, 'val'))
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))[:3]
        only_val = sorted(set(val_classes) - set(train_classes))[:3]
        raise DatasetError(f"the class folders of {root}/train and {root}/val differ (only in train: {only_train}, "
                           f"only in val: {only_val}); give both the same class folders")
    return train_classes, train_samples, val_samples


class ShardedEpochBatches(Sampler):
    """Batches of (index, epoch) keys for one process of a multi-process run: the epoch's order is
    EpochSampler's (a function of seed and epoch), cut into global batches, and this process takes the
    r-th of W near-equal slices of each, so the processes together read exactly one process's batches.
    A last global batch too short to give every process an image is dropped (each process must take
    every step)."""

    def __init__(self, size, seed, batch_size, rank, world_size, drop_last):
        self.order = EpochSampler(size, seed)
        self.size, self.batch_size, self.rank, self.world_size = size, batch_size, rank, world_size
        self.drop_last = drop_last

    def set_epoch(self, epoch):
        self.order.set_epoch(epoch)

    @property
    def strong(self):
        return self.order.strong

    @strong.setter
    def strong(self, on):
        self.order.strong = on

    def __len__(self):
        full, rest = divmod(self.size, self.batch_size)
        return full + (0 if self.drop_last or rest < self.world_size else 1)

    def __iter__(self):
        keys = list(self.order)
        for step in range(len(self)):
            batch = keys[step * self.batch_size:(step + 1) * self.batch_size]
            n = len(batch)
            yield batch[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]


def build_imagenet(data_folder, *, batch_size, val_batch_size, device, num_workers, seed, train_sample,
                   drop_last, channels_last, strong_view=False, rank=0, world_size=1):
    """DataBundle of the train/ and val/ folders under ``data_folder``; with ``world_size`` > 1, process
    ``rank``'s share of every global batch of ``batch_size`` and its contiguous part of the validation set;
    ``strong_view`` adds NTCE-KD's strong view to the training batches."""
    train_classes, train_samples, val_samples = scan_imagenet(data_folder)
    train_set = ImageFolderDataset(train_samples, train=True, seed=seed)
    val_set = ImageFolderDataset(val_samples, train=False)
    # An own generator keeps the DataLoader from drawing its worker seed from the global RNG.
    options = dict(num_workers=num_workers, pin_memory=device.type == 'cuda', persistent_workers=num_workers > 0,
                   generator=torch.Generator())
    if world_size > 1:
        sampler = ShardedEpochBatches(len(train_set), seed, batch_size, rank, world_size, drop_last)
        train_loader = DataLoader(train_set, batch_sampler=sampler, **options)
        n = len(val_set)
        val_share = Subset(val_set, range(rank * n // world_size, (rank + 1) * n // world_size))
        val_loader = DataLoader(val_share, val_batch_size, shuffle=False, **options)
    else:
        sampler = EpochSampler(len(train_set), seed)
        train_loader = DataLoader(train_set, batch_size, sampler=sampler, drop_last=drop_last, **options)
        val_loader = DataLoader(val_set, val_batch_size, shuffle=False, **options)
    contrast = ContrastSampler(train_set.labels, train_sample, device) if train_sample else None
    # CRD rows are drawn per process batch; each process draws from a stream of its own.
    train = FolderLoader(train_loader, device, sampler=sampler, seed=seed, channels_last=channels_last,
                         contrast=contrast, rank=rank if world_size > 1 else None)
    train.strong_view = strong_view
    val = FolderLoader(val_loader, device, channels_last=channels_last)
    return DataBundle(train, val, len(train_classes), len(train_set), train_set.labels,
                      fingerprint_files(data_folder, train_samples, val_samples))


def build_dali_data(data_folder, *, mode, batch_size, val_batch_size, device, seed, train_sample, drop_last,
                    channels_last, num_threads, strong_view=False, rank=0, world_size=1):
    """DataBundle of the same folders read by NVIDIA DALI (dataset/imagenet_dali.py, which imports DALI itself
    only when it builds its pipelines)."""
    classes, train_samples, val_samples = scan_imagenet(data_folder)
    bundle = build_dali_imagenet(train_samples, val_samples, len(classes), mode=mode,
                                 batch_size=batch_size // world_size, val_batch_size=val_batch_size, device=device,
                                 seed=seed, train_sample=train_sample, rank=rank, world_size=world_size,
                                 num_threads=num_threads, channels_last=channels_last, strong_view=strong_view)
    bundle.fingerprint = fingerprint_files(data_folder, train_samples, val_samples)
    return bundle
