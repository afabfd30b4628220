"""FedGH (Yi et al., ACM MM 2023, "FedGH: Heterogeneous Federated Learning with Generalized
Global Header"): clients of any architecture share per-class mean embeddings (prototypes)
as in FedProto; the server trains one *global header*, a linear layer embedding -> classes,
on every uploaded (prototype, class) pair with cross-entropy, and each client replaces its
own head with it. The header persists on the server across rounds; clients keep training
their whole model, header included, on private data (plain cross-entropy).

Round in fedkt: local training -> prototypes of the trained model -> the server trains the
header -> each participant adopts it (``receive``: no distillation, no loss) and is scored
with it, as HtFLlib scores FedGH clients right after they receive the header; the next
round's local training starts from that header.

Defaults as in HtFLlib's ``servergh.py`` (100 server epochs, SGD at lr 0.01, batches of 10,
one sample per uploaded (client, class) pair). fedkt differs in: the header's initial
weights drawn from the experiment's seed (HtFLlib copies client 0's head), shuffling from
the seed, and the header in the server checkpoint (a resumed run continues it). Every
model's head must be one linear layer on the shared embedding (all of fedkt's models and
timm's classifiers are); the embedding size must agree across architectures, as for
FedProto.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkt.method import Method, register
from fedkt.seeding import derive_seed
from fedkt.transfer.fusion import FUSIONS, Fusion, FusionResult, _check
from fedkt.transfer.params import count, positive
from fedkt.transfer.prototypes import head_matrix, load_head, sgd_epochs, upload_shares, uploaded

if TYPE_CHECKING:
    from fedkt.experiment import Experiment
    from fedkt.learner import Learner


@FUSIONS.register("global_head")
class GlobalHead(Fusion):
    """FedGH's server: a linear header trained on the uploaded prototypes. Every
    participant receives the same header as a ``(C, D + 1)`` array (weight, bias column);
    its weight row is its share of the uploaded (client, class) pairs."""

    spaces = ("embedding",)
    domains = ("class",)
    targets_space = "head"

    def __init__(
        self, epochs: int = 100, lr: float = 0.01, batch_size: int = 10, seed: int = 0
    ) -> None:
        self.epochs = count("epochs", epochs)
        self.lr = positive("lr", lr)
        self.batch_size = count("batch_size", batch_size)
        self.seed = int(seed)
        self.head: nn.Linear | None = None
        self.rounds = 0  # server rounds trained so far (each reshuffles with its own seed)
        self.last_loss = 0.0

    def _header(self, classes: int, dim: int) -> nn.Linear:
        h = self.head
        if h is None or (h.out_features, h.in_features) != (classes, dim):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, "gh-init") % 2**63)
                h = self.head = nn.Linear(dim, classes)
        return h

    def fuse(self, values: np.ndarray, counts: np.ndarray) -> FusionResult:
        values, counts = _check(values, counts)
        n, c, d = values.shape
        present = uploaded(values, counts)
        who, cls = np.nonzero(present)
        protos = torch.as_tensor(values[who, cls], dtype=torch.float32)
        labels = torch.as_tensor(cls, dtype=torch.int64)
        head = self._header(c, d)
        order = torch.Generator().manual_seed(
            derive_seed(self.seed, "gh-shuffle", self.rounds) % 2**63
        )
        self.last_loss = sgd_epochs(
            head.parameters(),
            len(labels),
            lambda batch: F.cross_entropy(head(protos[batch]), labels[batch]),
            self.epochs,
            self.lr,
            self.batch_size,
            order,
        )
        self.rounds += 1
        targets = np.broadcast_to(head_matrix(head), (n, c, d + 1)).astype(np.float32)
        return FusionResult(targets=targets, weights=np.tile(upload_shares(present), (n, 1)))

    def state_dict(self) -> dict[str, Any]:
        if self.head is None:
            return {}
        return {"head": head_matrix(self.head), "rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        matrix = np.asarray(state["head"])
        load_head(self._header(matrix.shape[0], matrix.shape[1] - 1), matrix)
        self.rounds = int(state["rounds"])


class FedGH(Method):
    def receive(
        self, exp: Experiment, learner: Learner, target: np.ndarray, server_round: int
    ) -> dict[str, float]:
        """Replace the receiving model's head with the server's header."""
        load_head(learner.receiving_model.head, target)
        return {}  # its exchange budget went to local training (train phase)


register(
    "fedgh",
    FedGH(
        description=(
            "FedGH (Yi et al.): class prototypes; the server trains a global linear header on "
            "them, which every client adopts as its head"
        ),
        exchanges="per-class mean embeddings + counts up (C x D + C), the header down (C x (D+1))",
        knowledge="prototypes",
        fusion="global_head",
        fixed_parts=True,
        adopts_targets=True,
    ),
)
