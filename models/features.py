"""What a network produced for a batch, and the one way the training code asks a model for it."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch


@dataclass
class NetOutput:
    """What one network produced for a batch."""
    logits: torch.Tensor
    feats: Optional[List[torch.Tensor]] = None  # [f0, ..., fK, pooled]; pre-ReLU maps if preact
    # The same network on other views of the batch, by view name (NTCE-KD's teacher on 'strong').
    views: Dict[str, 'NetOutput'] = field(default_factory=dict)


def run_network(net, images, needs_feats, preact):
    """``net``'s logits for ``images``, with its feature list when ``needs_feats``."""
    if needs_feats:
        feats, logits = net(images, is_feat=True, preact=preact)
        return NetOutput(logits, feats)
    return NetOutput(net(images))
