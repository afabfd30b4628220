"""FML, Federated Mutual Learning (Shen et al. 2020, arXiv:2006.16765): every client holds
its own *private* model, of any architecture, and a copy of one shared *meme* model. In
each round the client receives the server's meme, both models learn from its private
data and from each other (deep mutual learning) for the local epochs, and the client
sends its meme back; the server averages the memes (FedAvg). The private model never
leaves the client and is the one scored:

    L_private = alpha * CE(y, p_private) + (1 - alpha) * KL(p_meme || p_private)
    L_meme    = beta  * CE(y, p_meme)    + (1 - beta)  * KL(p_private || p_meme)

In fedkt the meme is the client's *student* (``model.student``; default: the first
client's architecture, the same for every client) and the private model its own model
(``model.tiers`` may mix architectures); the round is FedAvg's, through Flower's FedAvg,
with the student's weights averaged. ``alpha`` = ``beta`` = 0.5 as in the paper (HtFLlib's
command line defaults both to 1.0, which turns the mutual terms off). fedkt differs from
HtFLlib's ``clientfml.py`` in: the targets of the KL terms are detached (the papers' mutual
learning; HtFLlib lets the private loss's gradient reach the meme), KL is the per-sample
sum over classes (``nn.KLDivLoss()``'s default there also divides by the number of
classes), no gradient clipping, and one optimiser step per batch counts once in the
budget although it moves both models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedkt.method import Method, register
from fedkt.transfer.mutual import mutual_losses

if TYPE_CHECKING:
    import torch

    from fedkt.experiment import Experiment
    from fedkt.learner import Learner
    from fedkt.training import Fit


class FML(Method):
    def check_param(self, name: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        return float(value)

    def averaging_params(self, exp: Experiment) -> dict[str, Any]:
        return {}  # alpha and beta are the clients'; the server is Flower's plain FedAvg

    def local_training(
        self, exp: Experiment, learner: Learner, generator: torch.Generator, steps: int | None
    ) -> Fit:
        alpha, beta = exp.params["alpha"], exp.params["beta"]

        def pair_loss(private, meme, x, y):
            return sum(mutual_losses(private(x), meme(x), y, alpha, beta))

        return learner.train_pair(generator, pair_loss, steps)


register(
    "fml",
    FML(
        description=(
            "FML (Shen et al.): a private model and a shared meme model learn mutually on each "
            "client (CE + KL both ways); the server averages the memes"
        ),
        exchanges="the meme model's weights (the client's student)",
        shares_weights=True,
        averaging="FedAvg",
        weights_of="student",
        params={"alpha": 0.5, "beta": 0.5},
    ),
)
