"""L-MCL's trainable extras and losses: projection heads, the stage-logit aggregator, the meta weight
network, and the vanilla / interactive contrastive losses with their soft (KL) forms.

Embeddings are indexed ``[peer][stage]``. The contrastive terms are summed over every ordered pair of
different peers (i, j) and every pair of their stages (k, z), in that nesting order, which is also the
order of the meta network's per-pair weights.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.precision import at_least_fp32

META_WIDTH = 128  # the meta network's projection width (fixed in L-MCL, independent of --feat-dim)


def ordered_pairs(number_net, number_stage):
    """(i, k, j, z) for peers i != j and stages k, z: the pairs every contrastive term is summed over."""
    return [(i, k, j, z) for i in range(number_net) for j in range(number_net) if i != j
            for k in range(number_stage) for z in range(number_stage)]


class ProjectionHead(nn.Module):
    """Linear, ReLU, Linear to ``feat_dim``, then L2-normalised: where the contrastive losses compare."""

    def __init__(self, dim_in, feat_dim):
        super().__init__()
        self.proj_head = nn.Sequential(nn.Linear(dim_in, feat_dim), nn.ReLU(), nn.Linear(feat_dim, feat_dim))

    def forward(self, x):
        return F.normalize(self.proj_head(x), dim=1)


class ProjectionHeads(nn.Module):
    """One head per (peer, stage)."""

    def __init__(self, dims, number_stage, feat_dim):
        super().__init__()
        self.heads = nn.ModuleList(nn.ModuleList(ProjectionHead(dim, feat_dim) for _ in range(number_stage))
                                   for dim in dims)

    def forward(self, embeddings):
        return [[head(e) for head, e in zip(heads, peer)] for heads, peer in zip(self.heads, embeddings)]


class Aggregator(nn.Module):
    """Per peer: an MLP on its concatenated stage embeddings gives softmax weights over its stage logits;
    the weighted sum is the peer's aggregated logits."""

    def __init__(self, dims, number_stage):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(number_stage * dim, dim), nn.ReLU(),
                                                nn.Linear(dim, number_stage)) for dim in dims)

    def forward(self, embeddings, logits):
        aggregated = []
        for mlp, peer_embeddings, peer_logits in zip(self.mlps, embeddings, logits):
            weights = F.softmax(mlp(torch.cat(peer_embeddings, dim=1)), dim=1)
            aggregated.append((torch.stack(peer_logits, dim=1) * weights[:, :, None]).sum(dim=1))
        return aggregated


class MetaWeightNetwork(nn.Module):
    """Per-sample weights of every contrastive pair: sigmoid of the cosine similarity of the two stage
    embeddings after a linear projection of each (one per peer and stage)."""

    def __init__(self, dims, number_stage):
        super().__init__()
        self.proj = nn.ModuleList(nn.ModuleList(nn.Linear(dim, META_WIDTH) for _ in range(number_stage))
                                  for dim in dims)

    def forward(self, embeddings):
        unit = [[F.normalize(p(e), dim=1) for p, e in zip(proj, peer)] for proj, peer in zip(self.proj, embeddings)]
        return [torch.sigmoid((unit[i][k] * unit[j][z]).sum(dim=1))
                for i, k, j, z in ordered_pairs(len(embeddings), len(embeddings[0]))]


def supervised_contrastive(logits, positives, weight):
    """Mean over anchors of -weight * (mean log-probability of the anchor's positives), where each row's
    distribution runs over every sample but the anchor's own column."""
    logits = at_least_fp32(logits)
    own = torch.eye(logits.size(0), dtype=torch.bool, device=logits.device)
    log_prob = logits - torch.logsumexp(logits.masked_fill(own, float('-inf')), dim=1, keepdim=True)
    mean_positive = (positives * log_prob * weight).sum(1) / positives.sum(1)
    return -mean_positive.mean()


def weighted_kl(student_logits, teacher_logits, temperature, weight):
    """T^2 * sum over rows of weight * KL(softmax(teacher/T) || softmax(student/T)), over the batch size;
    the teacher side carries no gradient."""
    log_p_t = F.log_softmax(at_least_fp32(teacher_logits.detach()) / temperature, dim=1)
    log_p_s = F.log_softmax(at_least_fp32(student_logits) / temperature, dim=1)
    kl = (weight * log_p_t.exp() * (log_p_t - log_p_s)).sum()
    return temperature ** 2 * kl / student_logits.size(0)


def pair_losses(a, b, labels, weight, tau, temperature):
    """VCL, soft VCL, ICL and soft ICL between the L2-normalised embeddings ``a`` and ``b`` of one pair.

    VCL: supervised contrastive loss within each view (a a^T / tau and b b^T / tau); ICL: across views
    (a b^T / tau and b a^T / tau). Positives are the other samples of the anchor's class (never the
    diagonal, not even across views). The soft forms are KL terms between the two views' similarity
    distributions, in both directions. ``weight`` (B x 1) scales each anchor's terms.
    """
    same = labels[:, None] == labels[None, :]
    positives = (same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)).float()
    intra = (a @ a.t() / tau, b @ b.t() / tau)
    inter = (a @ b.t() / tau, b @ a.t() / tau)
    vcl = sum(supervised_contrastive(s, positives, weight) for s in intra)
    icl = sum(supervised_contrastive(s, positives, weight) for s in inter)
    soft_vcl = (weighted_kl(intra[0], intra[1], temperature, weight)
                + weighted_kl(intra[1], intra[0], temperature, weight))
    soft_icl = (weighted_kl(inter[0], inter[1], temperature, weight)
                + weighted_kl(inter[1], inter[0], temperature, weight))
    return vcl, soft_vcl, icl, soft_icl


def mcl_losses(projected, labels, weights, tau, temperature):
    """The four terms summed over all ordered peer pairs and stage pairs; ``weights`` is one (B,) tensor
    per pair in ``ordered_pairs`` order, or None for weight 1 (MCL without the meta network)."""
    totals = [0.0] * 4
    for n, (i, k, j, z) in enumerate(ordered_pairs(len(projected), len(projected[0]))):
        weight = 1.0 if weights is None else weights[n][:, None]
        terms = pair_losses(projected[i][k], projected[j][z], labels, weight, tau, temperature)
        totals = [t + term for t, term in zip(totals, terms)]
    return totals
