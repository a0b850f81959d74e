"""Accuracy and running sums kept on the device, read back only when printed."""


def correct_topk(logits, targets, ks=(1, 5)):
    """Number of samples whose target is among the top-k logits, for each k (as tensors)."""
    maxk = min(max(ks), logits.size(1))
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(targets.unsqueeze(1))
    return [hits[:, :min(k, maxk)].any(dim=1).sum() for k in ks]


def accuracy(logits, targets, ks=(1, 5)):
    """Top-k accuracies in percent (RepDistiller's ``accuracy``, as Python floats)."""
    n = targets.numel()
    return [100.0 * c.item() / n for c in correct_topk(logits, targets, ks)]


class RunningSums:
    """Sums of named values over an epoch. Values stay on their device until ``means()``, so the
    training loop does not wait for the GPU at every step."""

    def __init__(self):
        self.sums = {}
        self.count = 0

    def add(self, values, n):
        for name, value in values.items():
            value = value.detach().float() * n
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += n

    def means(self):
        return {name: float(total) / max(self.count, 1) for name, total in self.sums.items()}
