"""Class-balanced batches for L-MCL and MCL: every batch holds batch_size / 2 distinct classes, 2 images each.

The contrastive losses need a positive (another image of the anchor's class) for every anchor, which
random batches of CIFAR-100 often lack. As the reference's MPerClassSampler (m = 2) does, each batch
draws its classes uniformly without replacement and two different images of each class (the same image
twice only for a class of one image); batches are drawn independently, floor(N / batch_size) per epoch.
"""
import torch

from helper.errors import KDZooError

PER_CLASS = 2


class ClassBalancedOrder:
    """Draws an epoch's image order, batch after batch, from a generator (set it as a loader's
    ``batch_order``; the loader passes its per-(seed, epoch) shuffle generator)."""

    def __init__(self, labels, batch_size, flag='--batch_size'):
        labels = torch.as_tensor(labels).cpu()
        classes, counts = torch.unique(labels, return_counts=True)
        if batch_size % PER_CLASS or batch_size > PER_CLASS * len(classes) or batch_size > len(labels):
            raise KDZooError(
                f"{flag} {batch_size} cannot be filled by the class-balanced sampler ({PER_CLASS} images per "
                f"class): use an even batch size of at most {min(PER_CLASS * len(classes), len(labels))} "
                f"for these {len(classes)} classes and {len(labels)} images")
        self.batch_size = batch_size
        self.num_batches = len(labels) // batch_size
        self.by_class = torch.argsort(labels, stable=True)  # image indices grouped by class
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def draw(self, generator):
        """Image indices of the whole epoch, ``num_batches * batch_size`` of them, on the CPU."""
        classes_per_batch = self.batch_size // PER_CLASS
        # A uniformly random permutation of the classes per batch; its first entries are the batch's classes.
        keys = torch.rand(self.num_batches, len(self.counts), generator=generator)
        chosen = keys.argsort(dim=1)[:, :classes_per_batch]
        counts, starts = self.counts[chosen], self.starts[chosen]
        # Two distinct members: the first uniform over n, the second uniform over the other n - 1.
        u = torch.rand(2, *chosen.shape, generator=generator, dtype=torch.float64)
        first = (u[0] * counts).long()
        second = (u[1] * (counts - 1).clamp(min=1)).long()
        second = torch.where(counts > 1, second + (second >= first).long(), first)
        picks = torch.stack([first, second], dim=-1) + starts[..., None]
        return self.by_class[picks.flatten()]
