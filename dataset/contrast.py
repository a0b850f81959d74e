"""CRD's per-sample index rows (RepDistiller's CIFAR100InstanceSample), drawn for a whole batch at once."""
import torch

from helper.errors import KDZooError

# Random keys held at once when choosing negatives (128 MiB of float64); larger batches go in row chunks.
MAX_KEYS = 1 << 24


class ContrastSampler:
    """Draws (positive, k negatives) rows of training-set indices for a batch of anchors.

    Negatives are a uniform k-subset of the images of all other classes: with the training set sorted
    by class, the other classes are everything outside the anchor's block, so a row picks k distinct
    positions among those N - n_c images and steps over the block. A uniform subset of positions is
    the k largest of uniform random keys. A class whose pool is smaller than k draws with replacement,
    as RepDistiller does.
    """

    def __init__(self, train_labels, spec, device):
        labels = train_labels.to(device)
        self.k = spec.k
        self.exact = spec.mode == 'exact'
        self.num_train = len(labels)
        self.order = torch.argsort(labels, stable=True)  # training indices grouped by class
        self.counts = torch.bincount(labels)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.largest_pool = self.num_train - int(self.counts[self.counts > 0].min())
        self.smallest_pool = self.num_train - int(self.counts.max())
        if self.k >= self.largest_pool:
            raise KDZooError(f"--nce_k {self.k} is too large for {self.num_train} training images: it must be "
                             f"below {self.largest_pool} (the images outside the smallest class); lower --nce_k")

    def sample(self, indices, targets, generator):
        """(B, k+1) int64 rows for anchors ``indices`` of classes ``targets``, all on the sampler's device."""
        counts = self.counts[targets]
        starts = self.starts[targets]
        pools = self.num_train - counts
        if self.exact:
            positives = indices
        else:
            draw = torch.rand(len(targets), dtype=torch.float64, generator=generator, device=targets.device)
            # The clamp guards against draw * count rounding up to count itself.
            offsets = torch.minimum((draw * counts).long(), counts - 1)
            positives = self.order[starts + offsets]
        positions = self._distinct_positions(pools, generator)
        if self.k > self.smallest_pool:  # some class has too few others for k distinct negatives
            draw = torch.rand(len(targets), self.k, dtype=torch.float64, generator=generator, device=targets.device)
            repeated = torch.minimum((draw * pools[:, None]).long(), pools[:, None] - 1)
            positions = torch.where((pools < self.k)[:, None], repeated, positions)
        positions = positions + counts[:, None] * (positions >= starts[:, None])  # step over the anchor's class
        return torch.cat([positives[:, None], self.order[positions]], dim=1)

    def _distinct_positions(self, pools, generator):
        """k distinct positions in [0, pool) for each row; rows whose pool is under k get unused filler."""
        width = self.largest_pool
        columns = torch.arange(width, device=pools.device)
        chosen = []
        for chunk in pools.split(max(1, MAX_KEYS // width)):
            keys = torch.rand(len(chunk), width, dtype=torch.float64, generator=generator, device=pools.device)
            keys.masked_fill_(columns >= chunk[:, None], -1.0)  # positions past this row's pool never win
            chosen.append(keys.topk(self.k, dim=1, sorted=False).indices)
        return torch.cat(chosen)
