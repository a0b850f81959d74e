"""The online tables' baseline column: one network trained alone with cross-entropy, as the L-MCL repo's
main_cifar_baseline.py (``--baseline``), on the L-MCL recipe (Nesterov SGD, cosine lr from 0.1, 300 epochs,
batch 128 of plainly shuffled images, weight decay 5e-4).

Its run is a teacher run's, under save/online/: ``<model>_baseline_<dataset>_trial_<trial>/`` holds
``<model>_best.pth``, ``<model>_last.pth`` and the shared loop's other files, ``model`` the plain zoo network.
"""
import torch.nn.functional as F

from helper.run_files import RunFiles
from models.lmcl import baseline_model
from models.registry import build_model

from .base import OnlineMethod, TrainStep, register
from .lmcl import LMCL_RECIPE, refuse_imagenet


@register('baseline')
class Baseline(OnlineMethod):
    """One zoo network, cross-entropy on the labels."""
    recipe = LMCL_RECIPE
    nesterov = True  # the L-MCL repo's optimiser, whether or not --nesterov is given

    @classmethod
    def networks(cls, args):
        refuse_imagenet(args)
        return [baseline_model(args.arch)]

    @classmethod
    def build_network(cls, args, num_classes):
        return build_model(args.peers[0], num_classes, args.dataset)

    def step(self, batch, epoch):
        logits = self.model(batch.images)
        return TrainStep(logits=logits, losses={'ce': F.cross_entropy(logits, batch.targets)})

    @classmethod
    def run_name(cls, args):
        return f'{args.peers[0]}_baseline_{args.dataset}_trial_{args.trial}'

    @classmethod
    def run_files(cls, args):
        return RunFiles(args.save_root, 'online', cls.run_name(args), args.peers[0])
