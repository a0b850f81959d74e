"""Batches straight from a uint8 image tensor on the device, augmented there: no DataLoader, no workers.

Used by the small 32x32 data sets (CIFAR-100, digits). The training augmentation is RepDistiller's
RandomCrop(32, padding=4) then RandomHorizontalFlip(), applied to a whole batch with one gather.
With ``strong_view`` each training batch also carries NTCE-KD's strong view (dataset/strong_augment.py).
"""
import torch

from .batches import (AUGMENT_STREAM, CONTRAST_STREAM, SHUFFLE_STREAM, STRONG_STREAM, Batch, DataBundle,
                      epoch_generator, fingerprint_arrays, normalise)
from .contrast import ContrastSampler
from .strong_augment import strong_augment

PAD = 4  # zero padding of the crop; offsets into the padded image run over 0..2*PAD


def draw_crop_flip(count, generator, device):
    """Random crop offsets (dy, dx), each uniform over 0..2*PAD, and independent flips with p=0.5."""
    offsets = torch.randint(0, 2 * PAD + 1, (count, 2), generator=generator, device=device)
    flips = torch.rand(count, generator=generator, device=device) < 0.5
    return offsets[:, 0], offsets[:, 1], flips


def crop_flip(images, indices, dy, dx, flips):
    """``images[indices]`` (NHWC uint8) cropped at (dy, dx) from zero-padded copies, then mirrored where flipped.

    Every output pixel is fetched from the source images in one gather; those that fall in the padding
    are then set to 0 (black), as padding the uint8 image before ToTensor would make them.
    """
    height, width, channels = images.shape[1:]
    rows = dy[:, None] + torch.arange(height, device=images.device) - PAD
    cols = dx[:, None] + torch.arange(width, device=images.device) - PAD
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # the flip comes after the crop
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    # Row numbers into images viewed as (N*H*W, C): index_select on them is much faster than 3-D indexing.
    pixel_rows = ((indices[:, None] * height + rows.clamp(0, height - 1))[:, :, None] * width
                  + cols.clamp(0, width - 1)[:, None, :])
    pixels = images.view(-1, channels).index_select(0, pixel_rows.view(-1))
    return pixels.view(len(indices), height, width, channels).mul_(inside[..., None])


class InMemoryLoader:
    """Iterates Batches over ``images`` (contiguous N, H, W, C uint8 on the device) and their ``labels``.

    With ``train`` the order is shuffled and images are cropped and flipped; every draw comes from
    generators seeded by (seed, epoch), so an epoch can be replayed exactly. ``strong_view`` (training
    only; may be switched on after construction) adds ``Batch.images_strong`` from a stream of its own.
    """

    def __init__(self, images, labels, batch_size, mean, std, *, train, seed=0, drop_last=False,
                 channels_last=False, contrast=None, strong_view=False, rank=0, world_size=1):
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.mean = torch.tensor(mean, dtype=torch.float32, device=images.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=images.device)
        self.train = train
        self.seed = seed
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.contrast = contrast
        self.strong_view = strong_view
        self.batch_order = None  # e.g. dataset/class_balanced.py's ClassBalancedOrder, replacing the shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        if self.world_size > 1 and not self.train:
            return -(-len(self._validation_share()) // self.batch_size)
        if self.batch_order is not None:
            return self.batch_order.num_batches
        if self.drop_last:
            return len(self.labels) // self.batch_size
        steps = -(-len(self.labels) // self.batch_size)
        if self.world_size > 1 and 0 < len(self.labels) % self.batch_size < self.world_size:
            steps -= 1  # a last batch too short to give every process an image (each must take every step)
        return steps

    def _validation_share(self):
        """This process's contiguous part of the validation set (all of it in a single process)."""
        n = len(self.labels)
        return torch.arange(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size,
                            device=self.images.device)

    def _share(self, count):
        """This process's part of a global batch of ``count`` images: the r-th of W near-equal slices."""
        return slice(self.rank * count // self.world_size, (self.rank + 1) * count // self.world_size)

    def __iter__(self):
        device = self.images.device
        if self.train:
            shuffle_rng = epoch_generator(self.seed, self.epoch, SHUFFLE_STREAM)
            order = (torch.randperm(len(self.labels), generator=shuffle_rng) if self.batch_order is None
                     else self.batch_order.draw(shuffle_rng)).to(device)
            augment_rng = epoch_generator(self.seed, self.epoch, AUGMENT_STREAM, device)
            contrast_rng = epoch_generator(self.seed, self.epoch, CONTRAST_STREAM, device)
            strong_rng = epoch_generator(self.seed, self.epoch, STRONG_STREAM, device)
        elif self.world_size > 1:
            order = self._validation_share()
        else:
            order = torch.arange(len(self.labels), device=device)
        if self.train and self.world_size > 1:
            yield from self._shares(order, augment_rng, contrast_rng, strong_rng)
            return
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            if self.train:
                pixels = crop_flip(self.images, indices, *draw_crop_flip(len(indices), augment_rng, device))
            else:
                pixels = self.images[indices]
            targets = self.labels[indices]
            batch = Batch(self._to_batch_layout(pixels), targets, indices)
            if self.train and self.contrast is not None:
                batch.contrast_idx = self.contrast.sample(indices, targets, contrast_rng)
            if self.train and self.strong_view:
                strong = crop_flip(self.images, indices, *draw_crop_flip(len(indices), strong_rng, device))
                batch.images_strong = self._to_batch_layout(strong_augment(strong, strong_rng))
            yield batch

    def _shares(self, order, augment_rng, contrast_rng, strong_rng):
        """Training batches of a multi-process run: every process draws what a single process draws for
        the whole global batch (so the generators advance alike everywhere) and keeps its own slice, so the
        W processes together see exactly the single-process batch: images, crops, flips, CRD rows, strong views."""
        device = self.images.device
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            mine = self._share(len(indices))
            dy, dx, flips = draw_crop_flip(len(indices), augment_rng, device)
            pixels = crop_flip(self.images, indices[mine], dy[mine], dx[mine], flips[mine])
            batch = Batch(self._to_batch_layout(pixels), self.labels[indices[mine]], indices[mine])
            if self.contrast is not None:
                batch.contrast_idx = self.contrast.sample(indices, self.labels[indices], contrast_rng)[mine]
            if self.strong_view:
                strong = crop_flip(self.images, indices, *draw_crop_flip(len(indices), strong_rng, device))
                batch.images_strong = self._to_batch_layout(strong_augment(strong, strong_rng)[mine])
            yield batch

    def _to_batch_layout(self, pixels):
        """NHWC uint8 to normalised float NCHW (left in channels_last order when asked for)."""
        images = normalise(pixels, self.mean, self.std).permute(0, 3, 1, 2)
        return images if self.channels_last else images.contiguous()


def in_memory_bundle(train_images, train_labels, val_images, val_labels, num_classes, mean, std, *, batch_size,
                     val_batch_size, device, seed, train_sample, drop_last, channels_last, strong_view=False,
                     rank=0, world_size=1):
    """DataBundle for NHWC uint8 CPU tensors; the images move to ``device`` once, here. ``batch_size`` is
    the global batch; with ``world_size`` > 1 the loaders yield process ``rank``'s share."""
    contrast = ContrastSampler(train_labels, train_sample, device) if train_sample else None
    share = dict(rank=rank, world_size=world_size)
    train = InMemoryLoader(train_images.to(device), train_labels.to(device), batch_size, mean, std, train=True,
                           seed=seed, drop_last=drop_last, channels_last=channels_last, contrast=contrast,
                           strong_view=strong_view, **share)
    val = InMemoryLoader(val_images.to(device), val_labels.to(device), val_batch_size, mean, std, train=False,
                         channels_last=channels_last, **share)
    return DataBundle(train, val, num_classes, len(train_labels), train_labels,
                      fingerprint_arrays(train_images, train_labels, val_images, val_labels))
