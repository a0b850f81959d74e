"""Batches straight from a uint8 image tensor on the device, augmented there: no DataLoader, no workers.

Used by the small 32x32 data sets (CIFAR-100, digits). The training augmentation is RepDistiller's
RandomCrop(32, padding=4) then RandomHorizontalFlip(), applied to a whole batch with one gather.
"""
import torch

from .batches import (AUGMENT_STREAM, CONTRAST_STREAM, SHUFFLE_STREAM, Batch, DataBundle, epoch_generator,
                      normalise)
from .contrast import ContrastSampler

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
    generators seeded by (seed, epoch), so an epoch can be replayed exactly.
    """

    def __init__(self, images, labels, batch_size, mean, std, *, train, seed=0, drop_last=False,
                 channels_last=False, contrast=None):
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
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        if self.drop_last:
            return len(self.labels) // self.batch_size
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        device = self.images.device
        if self.train:
            shuffle_rng = epoch_generator(self.seed, self.epoch, SHUFFLE_STREAM)
            order = torch.randperm(len(self.labels), generator=shuffle_rng).to(device)
            augment_rng = epoch_generator(self.seed, self.epoch, AUGMENT_STREAM, device)
            contrast_rng = epoch_generator(self.seed, self.epoch, CONTRAST_STREAM, device)
        else:
            order = torch.arange(len(self.labels), device=device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            if self.train:
                pixels = crop_flip(self.images, indices, *draw_crop_flip(len(indices), augment_rng, device))
            else:
                pixels = self.images[indices]
            # Permuting NHWC to NCHW leaves the bytes in channels_last order.
            images = normalise(pixels, self.mean, self.std).permute(0, 3, 1, 2)
            if not self.channels_last:
                images = images.contiguous()
            targets = self.labels[indices]
            batch = Batch(images, targets, indices)
            if self.train and self.contrast is not None:
                batch.contrast_idx = self.contrast.sample(indices, targets, contrast_rng)
            yield batch


def in_memory_bundle(train_images, train_labels, val_images, val_labels, num_classes, mean, std, *, batch_size,
                     val_batch_size, device, seed, train_sample, drop_last, channels_last):
    """DataBundle for NHWC uint8 CPU tensors; the images move to ``device`` once, here."""
    contrast = ContrastSampler(train_labels, train_sample, device) if train_sample else None
    train = InMemoryLoader(train_images.to(device), train_labels.to(device), batch_size, mean, std, train=True,
                           seed=seed, drop_last=drop_last, channels_last=channels_last, contrast=contrast)
    val = InMemoryLoader(val_images.to(device), val_labels.to(device), val_batch_size, mean, std, train=False,
                         channels_last=channels_last)
    return DataBundle(train, val, num_classes, len(train_labels), train_labels)
