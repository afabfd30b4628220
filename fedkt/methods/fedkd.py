"""FedKD (Wu et al., Nature Communications 2022, "Communication-efficient federated learning
via knowledge distillation"): every client holds a private *mentor* model, of any
architecture, and a copy of one shared *mentee*. Both learn on private data from the labels
and from each other, by *adaptive* mutual distillation: the distillation terms weigh more
when both models are right (``fedkt.transfer.mutual.adaptive_mutual_losses``), with a
hidden-state term through a learnt map W_h from the mentee's embedding to the mentor's. The
mentee travels compressed by truncated SVD, keeping a fraction T of each matrix's energy,
T rising from ``T_start`` to ``T_end`` over the rounds (the "dynamic gradient
approximation"); the server averages the recovered mentees and sends the average back
compressed the same way. The mentor is never sent and is the one scored.

What is compressed (``compress``): ``weights`` (the default, HtFLlib's way) the mentees'
weights both ways; ``updates`` (the paper's way on the uplink) each client's change from
the mentee it was sent this round, which the server adds to the mentee it sent; the server
still sends weights, since with client sampling a client may hold no earlier copy to add an
update to (the paper sends updates both ways). Measured on the MNIST cell
(simulations/compare_mnist_fedkd_updates.yaml, 5 seeds): the same accuracy (updates minus
weights: -0.1 points, -0.9 to +0.3 by seed) and less than half the uplink (9.7 vs 20.3 MB per
run, mean of 5 seeds), but the averaged mentee then keeps more rank and the downlink grows
(60.0 vs 40.1 MB), 15% more traffic in all: the default stays ``weights``.

In fedkt the mentee is the client's *student* (``model.student``; default: the first
client's architecture, the same for every client) and W_h a client module kept with the
client's state (``Method.client_modules``); the server is Flower's FedAvg behind a weight
codec (``Method.weight_codec``). Defaults as HtFLlib's ``clientkd.py`` / ``serverkd.py``:
``T_start`` 0.95, ``T_end`` 0.98, W_h a linear map without bias, T of round t (1-based) of
R: ``T_start + (t - 1) / R * (T_end - T_start)``. fedkt differs in: the compression (above);
the adaptive weight
carries no gradient and each model's terms treat the other's output as fixed (see
``adaptive_mutual_losses``); a convolution is compressed as one matrix (see
``fedkt.transfer.compression``); mentor, mentee and W_h share one optimiser (HtFLlib has a
separate mentee learning rate, 0.01 by default, as its main one) and one gradient-norm clip
at ``clip_norm`` 10 (HtFLlib clips each of the three at 10, "to prevent divergence"; without
it, fedkt's MNIST cell at lr 0.05 with momentum diverged to NaN on one client: the adaptive
weight 1 / (CE_t + CE_s) grows as both models become right).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedkt.method import Method, register
from fedkt.seeding import derive_seed
from fedkt.transfer.compression import SVDCodec
from fedkt.transfer.mutual import adaptive_mutual_losses

if TYPE_CHECKING:
    from fedkt.experiment import Experiment
    from fedkt.learner import Learner
    from fedkt.training import Fit


#: What a client's reply compresses: its mentee's weights (HtFLlib's way, the default), or
#: its change from the mentee it was sent (the paper's "gradients").
COMPRESS = ("weights", "updates")


class FedKD(Method):
    def check_param(self, name: str, value: Any) -> Any:
        if name == "compress":
            if value not in COMPRESS:
                raise ValueError(f"compress must be one of {', '.join(COMPRESS)}, got {value!r}")
            return value
        if name == "hidden_weight":
            return float(super().check_param(name, value))
        if name == "clip_norm":
            return float(super().check_param(name, value)) or None  # 0: no clipping
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
        return float(value)

    def averaging_params(self, exp: Experiment) -> dict[str, Any]:
        return {}  # T_start and T_end drive the codec; the server is Flower's plain FedAvg

    def energy(self, exp: Experiment, server_round: int) -> float:
        """The fraction of each matrix's energy the weights keep in ``server_round``."""
        start, end = exp.params["T_start"], exp.params["T_end"]
        return start + (server_round - 1) / exp.config.rounds * (end - start)

    def weight_codec(self, exp: Experiment, server_round: int) -> SVDCodec:
        return SVDCodec(self.energy(exp, server_round), exp.params["compress"] == "updates")

    def client_modules(self, exp: Experiment, learner: Learner) -> dict[str, nn.Module]:
        assert learner.student is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(exp.config.seed, "fedkd-hidden-map") % 2**63)
            hidden_map = nn.Linear(
                learner.student.embedding_dim, learner.model.embedding_dim, bias=False
            )
        return {"hidden_map": hidden_map}

    def local_training(
        self, exp: Experiment, learner: Learner, generator: torch.Generator, steps: int | None
    ) -> Fit:
        hidden_map, hidden = learner.extras["hidden_map"], exp.params["hidden_weight"]

        def pair_loss(mentor, mentee, x, y):
            h_t, h_s = mentor.embed(x), mentee.embed(x)
            losses = adaptive_mutual_losses(
                mentor.head(h_t), mentee.head(h_s), h_t, hidden_map(h_s), y, hidden
            )
            return sum(losses)

        clip = exp.params["clip_norm"]
        return learner.train_pair(generator, pair_loss, steps, also=hidden_map, clip_norm=clip)


register(
    "fedkd",
    FedKD(
        description=(
            "FedKD (Wu et al.): a private mentor and a shared mentee learn by adaptive mutual "
            "distillation; the mentee travels SVD-compressed and is averaged"
        ),
        exchanges=(
            "the mentee as truncated-SVD factors, both ways (compress: updates sends the "
            "clients' changes instead of their weights)"
        ),
        shares_weights=True,
        averaging="FedAvg",
        weights_of="student",
        params={
            "T_start": 0.95,
            "T_end": 0.98,
            "clip_norm": 10.0,
            "hidden_weight": 1.0,
            "compress": "weights",
        },
    ),
)
