"""SimKD: Chen et al., "Knowledge Distillation with the Reused Teacher Classifier" (CVPR 2022).

The student's last feature map goes through a trained projector onto the teacher's last map (MSE, the only
loss by default: ``-c 0 -d 0 -b 1``), and the student predicts with the teacher's frozen classifier on
the projected map. Paper and the SimKD repo agree; from the repo (the code wins): the taller of the two
maps is average-pooled to the other's size first, CE and KD (when weighted) act on the student's own
logits, and training accuracy, validation and the saved ``proj`` use the projector + teacher classifier.
Here the projector factor must divide the teacher's channel count (the repo rounds t_n // f down).
"""
from helper.errors import KDZooError
from distiller_zoo.deploy import SimKDNetwork, simkd_pool_to
from models.util import SimKD
from .base import Distiller
from .registry import register
from .teacher import Borrowed
from .FitNet import HintLoss

__all__ = ['SimKDDistiller']


def teacher_classifier(teacher, width, method):
    """The teacher's final Linear, checked to read ``width`` features (what the method feeds it)."""
    classifier = teacher.get_classifier()
    if classifier.in_features != width:
        raise KDZooError(f"{method} feeds the teacher's classifier a {width}-channel feature, but this teacher's "
                         f"classifier reads {classifier.in_features} (its last feature map is not what it "
                         f"pools into the classifier); pick another teacher")
    return classifier


@register('simkd')
class SimKDDistiller(Distiller):
    """Projector (``models.util.SimKD``) on ``feats[-2]``; ``-f/--factor`` sets its bottleneck."""
    needs_feats = True
    default_weights = (0.0, 0.0, 1.0)

    def __init__(self, args, student, teacher, probe_s, probe_t, data):
        super().__init__(args, student, teacher, probe_s, probe_t, data)
        feat_s, feat_t = probe_s.feats[-2], probe_t.feats[-2]
        s_n, t_n = feat_s.shape[1], feat_t.shape[1]
        classifier = teacher_classifier(teacher, t_n, 'SimKD')
        if args.factor < 1 or t_n % args.factor:
            raise KDZooError(f"-f/--factor {args.factor} must be a positive divisor of the teacher's {t_n} "
                             f"channels (the projector's bottleneck is {t_n} / f wide); the SimKD repo uses 2, 4, 8")
        self.projector = SimKD(s_n=s_n, t_n=t_n, factor=args.factor)
        self.pool_to = simkd_pool_to(feat_s, feat_t)
        self.criterion = HintLoss()
        self.classifier_t = Borrowed(classifier)  # the teacher's: never trained or saved here
        self.meta = dict(kind='simkd', model=args.model_s, model_t=args.model_t, dataset=args.dataset,
                         num_classes=classifier.out_features, s_n=s_n, t_n=t_n, factor=args.factor,
                         pool_to=self.pool_to)

    @classmethod
    def add_arguments(cls, parser):
        group = parser.add_argument_group('SimKD')
        group.add_argument('-f', '--factor', type=int, default=2, help="SimKD projector's channel factor")

    def forward_train(self, student, batch, out_t, epoch):
        """CE and KD (when weighted) on the student's own logits, the MSE on the projected map; the logits
        trained on, for the training accuracy, are the deployed path's, as in the SimKD repo."""
        out_s = self.run_student(student, batch)
        trans_feat_s, trans_feat_t, pred_feat_s = self.projector(out_s.feats[-2], out_t.feats[-2],
                                                                 self.classifier_t.module)
        terms = self.ce_kd_terms(out_s.logits, out_t.logits, batch.targets, batch, epoch)
        if self.beta:
            terms[self.name] = self.beta * self.criterion(trans_feat_s, trans_feat_t)
        return pred_feat_s, terms

    def predict(self, student, teacher, images):
        feats, _ = student(images, is_feat=True)
        return self.projector.predict(feats[-2], teacher.get_classifier(), self.pool_to)

    def checkpoint_extras(self):
        return {'proj': self.projector.state_dict()}

    def deployable(self, student, teacher):
        network = SimKDNetwork.assemble(student, self.projector, teacher.get_classifier(), self.pool_to)
        meta = dict(self.meta, num_params=sum(p.numel() for p in network.parameters()))
        return network, meta
