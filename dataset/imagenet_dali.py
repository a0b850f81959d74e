"""ImageNet folders through NVIDIA DALI: ``--dali gpu`` decodes JPEGs on the GPU, ``--dali cpu`` in DALI's
CPU threads. Imported only when --dali is given, so CIFAR runs never need the package.

Training: random-resized-crop 224 (scale 0.08-1, ratio 3/4-4/3), horizontal flip, normalisation;
validation: resize the shorter side to 256, centre crop 224. Both yield the same ``Batch`` as the
other loaders, teacher and student see the same batches. With the strong view (NTCE-KD) the pipeline
also yields a second, independent crop and flip of every training image as uint8, which gets NTCE-KD's
operations and Cutout on the device (dataset/strong_augment.py), as with the PIL loader.

Order and sharding: each epoch the training file list is permuted by a generator seeded from
(seed, epoch) -- the same permutation on every rank -- and rank r of R reads the r-th contiguous
shard of it. The pipeline is rebuilt per epoch with a seed from (seed, epoch), so an epoch's batches
depend on (seed, epoch, rank, world size) only. The instance index of every image (CRD, ND) is passed
to the reader as its label; the class label is looked up from it.
"""
import torch

from helper.errors import KDZooError
from .batches import (AUGMENT_STREAM, CONTRAST_STREAM, SHUFFLE_STREAM, STRONG_STREAM, Batch, DataBundle,
                      epoch_generator, normalise)
from .contrast import ContrastSampler
from .image_transforms import MEAN, STD
from .strong_augment import strong_augment

MEAN_255 = [m * 255 for m in MEAN]  # DALI normalises 0-255 pixels
STD_255 = [s * 255 for s in STD]


def import_dali():
    """The DALI modules, or one line naming the wheel that fits this machine's CUDA."""
    try:
        from nvidia import dali
        from nvidia.dali import fn, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    except ImportError:
        cuda = torch.version.cuda
        wheel = f"nvidia-dali-cuda{cuda.split('.')[0]}0" if cuda else 'nvidia-dali-cuda120'
        hint = (" (nvidia-dali-cuda110 is only a placeholder on PyPI now; use a CUDA 12 build of torch with "
                "nvidia-dali-cuda120)" if wheel == 'nvidia-dali-cuda110' else '')
        raise KDZooError(f"--dali needs NVIDIA DALI, which is not installed; pip install {wheel}{hint}, or drop "
                         f"--dali to read the folders with PIL") from None
    return dali, fn, types, DALIGenericIterator, LastBatchPolicy


def _pipeline(dali, fn, types, files, labels, *, train, mode, batch_size, num_threads, device_id, seed,
              strong=False):
    decode_device = 'mixed' if mode == 'gpu' else 'cpu'

    def random_crop(jpegs):
        """Random-resized crop to 224 and a random flip (decoded: only the crop's region of the JPEG)."""
        images = fn.decoders.image_random_crop(jpegs, device=decode_device, output_type=types.RGB,
                                               random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3],
                                               num_attempts=10)
        return fn.resize(images, resize_x=224, resize_y=224), fn.random.coin_flip(probability=0.5)

    @dali.pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                       prefetch_queue_depth=2)
    def define():
        jpegs, index = fn.readers.file(files=files, labels=labels, random_shuffle=False, name='Reader',
                                       pad_last_batch=not train)
        if train:
            images, mirror = random_crop(jpegs)
        else:
            images = fn.decoders.image(jpegs, device=decode_device, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=256)
            mirror = False
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout='CHW', crop=(224, 224),
                                          mean=MEAN_255, std=STD_255, mirror=mirror)
        if not strong:
            return images, index
        # the strong view: its own crop and flip of the same file, left as uint8 HWC for strong_augment
        strong_images, strong_mirror = random_crop(jpegs)
        strong_images = fn.crop_mirror_normalize(strong_images, dtype=types.UINT8, output_layout='HWC',
                                                 crop=(224, 224), mirror=strong_mirror)
        return images, index, strong_images

    return define()


class DaliLoader:
    """Batches of one split from a DALI pipeline, on ``device``."""

    def __init__(self, samples, *, train, mode, batch_size, device, seed, rank, world_size, num_threads,
                 channels_last, contrast=None, strong_view=False):
        self.dali = import_dali()
        self.paths = [path for path, _ in samples]
        self.class_of = torch.tensor([label for _, label in samples], dtype=torch.int64)
        self.train, self.mode, self.batch_size = train, mode, batch_size
        self.device, self.seed, self.rank, self.world_size = device, seed, rank, world_size
        self.num_threads, self.channels_last, self.contrast = num_threads, channels_last, contrast
        self.strong_view = strong_view  # NTCE-KD's strong view (training only); may be switched on later
        self.mean, self.std = torch.tensor(MEAN, device=device), torch.tensor(STD, device=device)  # of the strong view
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _shard(self):
        order = torch.arange(len(self.paths))
        if self.train:
            order = torch.randperm(len(self.paths), generator=epoch_generator(self.seed, self.epoch, SHUFFLE_STREAM))
        per_rank = len(order) // self.world_size if self.train else -(-len(order) // self.world_size)
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __len__(self):
        shard = len(self._shard())
        return shard // self.batch_size if self.train else -(-shard // self.batch_size)

    def __iter__(self):
        dali, fn, types, iterator_cls, policy = self.dali
        shard = self._shard()
        if len(shard) == 0:
            return
        seed = epoch_generator(self.seed, self.epoch, AUGMENT_STREAM).initial_seed() % 2**31
        # A CPU-only pipeline must have no device; a GPU one decodes on the training device.
        device_id = (self.device.index or 0) if self.mode == 'gpu' else None
        strong = self.train and self.strong_view
        pipe = _pipeline(dali, fn, types, [self.paths[i] for i in shard], shard.tolist(), train=self.train,
                         mode=self.mode, batch_size=self.batch_size, num_threads=self.num_threads,
                         device_id=device_id, seed=seed, strong=strong)
        batches = iterator_cls(pipe, ['images', 'indices'] + (['strong'] if strong else []), reader_name='Reader',
                               auto_reset=False, last_batch_policy=policy.DROP if self.train else policy.PARTIAL)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        contrast_generator = epoch_generator(self.seed, self.epoch, CONTRAST_STREAM, device=self.device)
        strong_generator = epoch_generator(self.seed, self.epoch, STRONG_STREAM, device=self.device,
                                           rank=self.rank if self.world_size > 1 else None)
        for step, outputs in enumerate(batches):
            if self.train and step == len(self):
                break
            images = outputs[0]['images'].to(self.device, non_blocking=True).contiguous(memory_format=fmt)
            indices = outputs[0]['indices'].reshape(-1).long().to(self.device)
            targets = self.class_of.to(self.device)[indices]
            contrast_idx = images_strong = None
            if self.contrast is not None:
                contrast_idx = self.contrast.sample(indices, targets, contrast_generator)
            if strong:
                pixels = strong_augment(outputs[0]['strong'].to(self.device, non_blocking=True), strong_generator)
                images_strong = normalise(pixels, self.mean, self.std).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
            yield Batch(images, targets, indices, contrast_idx, images_strong)


def build_dali_imagenet(train_samples, val_samples, num_classes, *, mode, batch_size, val_batch_size, device, seed,
                        train_sample, rank=0, world_size=1, num_threads=4, channels_last=False, strong_view=False):
    """DataBundle of DALI loaders over already scanned (path, class) lists."""
    if mode == 'gpu' and device.type != 'cuda':
        raise KDZooError("--dali gpu decodes on a GPU, and no CUDA device is available; use --dali cpu or drop --dali")
    labels = torch.tensor([label for _, label in train_samples], dtype=torch.int64)
    contrast = ContrastSampler(labels, train_sample, device) if train_sample else None
    common = dict(mode=mode, device=device, seed=seed, rank=rank, world_size=world_size, num_threads=num_threads,
                  channels_last=channels_last)
    train = DaliLoader(train_samples, train=True, batch_size=batch_size, contrast=contrast, strong_view=strong_view,
                       **common)
    val = DaliLoader(val_samples, train=False, batch_size=val_batch_size, **common)
    return DataBundle(train, val, num_classes, len(train_samples), labels)
