"""The reference point of the benchmarks: a RepDistiller-style KD loop, written plainly.

Per-image PIL transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) in
DataLoader workers, fp32, NCHW, a ``.item()`` per step for the meters, teacher under ``no_grad`` and
both networks run with ``is_feat=True`` -- what RepDistiller's ``train_distill`` does for ``kd``.
torchvision is not a dependency, so the transforms are spelled out with PIL and numpy.
"""
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

MEAN = np.array([0.5071, 0.4867, 0.4408], dtype=np.float32)
STD = np.array([0.2675, 0.2565, 0.2761], dtype=np.float32)


class PilCifar(torch.utils.data.Dataset):
    """(image, target, index) with the torchvision-style per-image augmentation of RepDistiller."""

    def __init__(self, images_nhwc, labels):
        self.images = images_nhwc.numpy()
        self.labels = labels.tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        img = Image.fromarray(self.images[index])
        img = ImageOps.expand(img, border=4, fill=0)
        top, left = random.randint(0, 8), random.randint(0, 8)
        img = img.crop((left, top, left + 32, top + 32))
        if random.random() < 0.5:
            img = ImageOps.mirror(img)
        array = (np.asarray(img, dtype=np.float32) / 255 - MEAN) / STD
        return torch.from_numpy(array.transpose(2, 0, 1).copy()), self.labels[index], index


def plain_loader(images, labels, batch_size, workers):
    return torch.utils.data.DataLoader(PilCifar(images, labels), batch_size=batch_size, shuffle=True,
                                       num_workers=workers, pin_memory=torch.cuda.is_available(),
                                       drop_last=True, persistent_workers=workers > 0)


def plain_kd_step(student, teacher, optimizer, images, targets, device, T=4.0, gamma=0.1, alpha=0.9):
    images, targets = images.to(device), targets.to(device)
    feat_s, logit_s = student(images, is_feat=True)
    with torch.no_grad():
        feat_t, logit_t = teacher(images, is_feat=True)
    loss_cls = F.cross_entropy(logit_s, targets)
    loss_div = F.kl_div(F.log_softmax(logit_s / T, dim=1), F.softmax(logit_t / T, dim=1),
                        reduction='sum') * T ** 2 / logit_s.shape[0]
    loss = gamma * loss_cls + alpha * loss_div
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()  # RepDistiller's AverageMeter reads every step back
