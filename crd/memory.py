"""CRD's memory (RepDistiller's crd/memory.py): banks of past embeddings that supply the negatives.

Memory: the two banks hold 2 x n_data x feat_dim numbers, 4 bytes each in fp32 and 2 with
``--crd_bank fp16|bf16``: CIFAR-100 (50,000 x 128) needs 51 MB in fp32; ImageNet (1.28M x 128)
needs 1.31 GB in fp32 and 0.66 GB in half precision. A half bank only stores the rows in half
precision: the scores and the momentum update are computed in fp32. The scores of a step need, whatever
the bank dtype, either an fp32 copy of both banks (banks of up to 16 (K+1) rows, scored against every
row with one GEMM: CIFAR-100's, 51 MB) or the 2 x B x (K+1) x feat_dim fp32 rows gathered for the batch
(larger banks, as RepDistiller: 1.07 GB at B 64, K 16384, feat_dim 128), kept for the backward pass.
Both give RepDistiller's scores, to float rounding.

In a multi-process job every process keeps the whole banks. Each scores its own anchors, then the
embeddings and indices of the global batch are gathered and every process applies the same update, so the
banks stay identical everywhere and equal to a single process's; Z is estimated over the global batch.
"""
import math

import torch
import torch.nn as nn

from helper import distributed
from helper.errors import KDZooError
from helper.precision import wide_dtype

__all__ = ['BANK_DTYPES', 'ContrastMemory']

BANK_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
REPORT_BYTES = 100e6  # banks larger than this are announced at construction
# Banks of at most this many times K+1 rows are scored against every row with one GEMM (``_scores``);
# larger ones (ImageNet's 1.28M rows) gather the K+1 rows of each anchor, as RepDistiller does.
SCORE_EVERY_ROW = 16


class ContrastMemory(nn.Module):
    """``ContrastMemory(inputSize, outputSize, K, T=0.07, momentum=0.5)``: two banks of outputSize rows
    (one per training image) of inputSize-wide embeddings, ``memory_v1`` for the student and
    ``memory_v2`` for the teacher, initialised uniform in +-1/sqrt(inputSize/3).

    ``forward(v1, v2, y, idx=None)`` takes the L2-normalised student and teacher embeddings (B, inputSize),
    the data-set indices y of the batch and the (B, K+1) index rows (positive first, then K negatives).
    It returns ``(out_v1, out_v2)``, each (B, K+1, 1): out_v1 = exp(<v1, memory_v2[idx]>/T) / Z_v1 (student
    anchors against teacher rows) and out_v2 = exp(<v2, memory_v1[idx]>/T) / Z_v2. Each Z is estimated on
    the first batch as the mean of its exp-scores times outputSize and then frozen; the ``Z`` buffer holds
    -1 until then, so a restored state_dict continues with the same constants. After the scores, rows y of
    both banks move to normalise(momentum * row + (1 - momentum) * embedding).

    Without ``idx`` all K + 1 indices are drawn uniformly from the bank and the first is replaced by y,
    as RepDistiller's AliasMethod does with its uniform weights (negatives may then share the class).
    ``bank_dtype`` (not in RepDistiller) stores the banks in half precision.
    """

    def __init__(self, inputSize, outputSize, K, T=0.07, momentum=0.5, bank_dtype=torch.float32):
        super().__init__()
        self.K, self.T, self.momentum = K, T, momentum
        self.register_buffer('Z', torch.full((2,), -1.0))  # Z_v1, Z_v2; negative = not yet estimated
        stdv = 1.0 / math.sqrt(inputSize / 3)
        for name in ('memory_v1', 'memory_v2'):
            bank = torch.rand(outputSize, inputSize).mul_(2 * stdv).add_(-stdv)
            self.register_buffer(name, bank.to(bank_dtype))
        size = 2 * outputSize * inputSize * self.memory_v1.element_size()
        if size > REPORT_BYTES:
            print(f"CRD memory banks: 2 x {outputSize} x {inputSize} {str(bank_dtype).replace('torch.', '')} "
                  f"= {size / 1e9:.2f} GB on the training device")
        self._z_shown = False
        self._z_pending = None  # multi-process runs: whether Z still needs its estimate (read once)

    def forward(self, v1, v2, y, idx=None):
        batch = v1.shape[0]
        n_data = self.memory_v1.size(0)
        if idx is None:
            idx = torch.randint(n_data, (batch, self.K + 1), device=y.device)
            idx[:, 0] = y
        elif idx.dim() != 2 or idx.size(0) != batch:
            raise KDZooError(f"contrast_idx must hold one row per anchor, shape ({batch}, 1 + negatives), got "
                             f"{tuple(idx.shape)}; pass the positive index then the negatives in each row")
        dtype = wide_dtype(v1.dtype)  # fp32 under autocast, fp64 in the tests
        with torch.autocast(v1.device.type, enabled=False):
            v1, v2 = v1.to(dtype), v2.to(dtype)
            out_v2 = self._scores(self.memory_v1, v2, idx, dtype)
            out_v1 = self._scores(self.memory_v2, v1, idx, dtype)
            with torch.no_grad():
                if distributed.current().enabled:
                    self._update_across_ranks(out_v1, out_v2, v1, v2, y, n_data)
                else:
                    estimate = torch.stack([out_v1.mean(), out_v2.mean()]) * n_data
                    self.Z.copy_(torch.where(self.Z < 0, estimate, self.Z))
                    self._momentum_update(self.memory_v1, v1, y)
                    self._momentum_update(self.memory_v2, v2, y)
            z = self.Z.clone()  # the division keeps its own copy: the buffer may change before backward
            out_v1 = out_v1 / z[0]
            out_v2 = out_v2 / z[1]
        if not self._z_shown:  # one read-back per process: the estimate, or the constants a resume restored
            self._z_shown = True
            print(f"CRD normalisation constants: Z_v1 {self.Z[0].item():.1f}, Z_v2 {self.Z[1].item():.1f}")
        return out_v1, out_v2

    def _scores(self, bank, anchors, idx, dtype):
        """exp(<anchors[b], bank[idx[b, j]]> / T), shape (B, K+1, 1), from the bank as it is before this step's
        update (the backward pass reads the same rows)."""
        batch, width = anchors.shape
        if bank.size(0) <= SCORE_EVERY_ROW * idx.size(1):
            # One GEMM against every row, then pick each anchor's K+1 scores: far less memory traffic than
            # gathering B x (K+1) rows (CIFAR-100's 50,000 rows at K 16384: 19x faster on one CPU thread, and
            # 51 MB of bank copies for both directions instead of 1.07 GB of gathered rows kept for backward).
            # The copy keeps the pre-update rows for backward.
            rows = bank.to(dtype, copy=True)
            return torch.exp((anchors @ rows.t()).gather(1, idx) / self.T).unsqueeze(2)
        rows = bank.index_select(0, idx.reshape(-1)).to(dtype).view(batch, -1, width)
        return torch.exp(torch.bmm(rows, anchors.unsqueeze(2)) / self.T)

    def _update_across_ranks(self, out_v1, out_v2, v1, v2, y, n_data):
        """Z from the global batch's mean scores, then the momentum update with the global batch."""
        if self._z_pending is None:
            self._z_pending = bool((self.Z < 0).any())  # false after a resume that restored Z
        if self._z_pending:
            sums = torch.stack([out_v1.sum(), out_v2.sum(), torch.tensor(float(out_v1.numel()), device=y.device,
                                                                        dtype=out_v1.dtype)])
            sums = distributed.all_reduce_step(sums)
            self.Z.copy_(sums[:2] / sums[2] * n_data)
            self._z_pending = False
        y_all = distributed.all_gather_step(y)
        self._momentum_update(self.memory_v1, distributed.all_gather_step(v1.contiguous()), y_all)
        self._momentum_update(self.memory_v2, distributed.all_gather_step(v2.contiguous()), y_all)

    def _momentum_update(self, bank, embedding, y):
        rows = bank.index_select(0, y).to(embedding.dtype).mul_(self.momentum)
        rows.add_(embedding * (1 - self.momentum))
        rows = rows / rows.pow(2).sum(1, keepdim=True).pow(0.5)
        bank.index_copy_(0, y, rows.to(bank.dtype))
