"""FedAvg with Apple's pfl (pfl-research) on data and a partition exported by fedkt.

Run by ``benchmarks/pfl_side_by_side.py`` with the Python of an environment that has pfl
(``pip install torch==2.13.0 'pfl[pytorch]==0.6.0'``); imports neither fedkt nor Flower.

Data: an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (inputs already
normalised and flattened as fedkt's model sees them) and ``partition`` (JSON: client id ->
rows of the training arrays). Model: fedkt's ``mlp`` layers (Linear 128, ReLU, Linear 64,
ReLU, Linear to classes). Every client trains in every round (pfl's ``minimize_reuse``
sampler with a cohort of all clients), local SGD with momentum, contiguous batches (pfl
does not shuffle), server step: the data-size weighted mean of the updates (FedAvg).
Prints one JSON line: test accuracy of the final global model and times.
"""

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402

import numpy as np  # noqa: E402
import pfl  # noqa: E402
import torch  # noqa: E402
from pfl.aggregate.simulate import SimulatedBackend  # noqa: E402
from pfl.aggregate.weighting import WeightByDatapoints  # noqa: E402
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams  # noqa: E402
from pfl.data.dataset import Dataset  # noqa: E402
from pfl.data.federated_dataset import FederatedDataset  # noqa: E402
from pfl.data.sampling import get_user_sampler  # noqa: E402
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams  # noqa: E402
from pfl.metrics import Weighted  # noqa: E402
from pfl.model.pytorch import PyTorchModel  # noqa: E402
from torch import nn  # noqa: E402

# torch imports its optimiser internals on the first optimiser built (seconds): count it
# as import time, so the work figures hold work only.
torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
_T_IMPORTS = time.perf_counter()


class MLP(nn.Module):
    """fedkt's ``mlp`` layers, with the loss/metrics methods pfl's PyTorchModel calls."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def loss(self, x, y, eval=False):  # noqa: A002 - pfl's signature
        self.eval() if eval else self.train()
        return nn.functional.cross_entropy(self(x), y)

    @torch.no_grad()
    def metrics(self, x, y, eval=True):  # noqa: A002
        self.eval() if eval else self.train()
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct = (logits.argmax(1) == y).sum().item()
        return {"loss": Weighted(loss, len(y)), "accuracy": Weighted(correct, len(y))}


class FedAvgWithoutUserEval(FederatedAveraging):
    """pfl's FedAvg without its per-client evaluation before and after local training
    (metrics only: two extra forward passes per client that fedkt's FedAvg does not make)."""

    def get_next_central_contexts(self, *args, **kwargs):
        contexts, model, metrics = super().get_next_central_contexts(*args, **kwargs)
        if contexts is not None:
            contexts = tuple(dataclasses.replace(c, do_evaluation=False) for c in contexts)
        return contexts, model, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--momentum", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    # pfl draws its random states from numpy's global generator; the model from torch's
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)

    with np.load(a.data) as z:
        x_tr = torch.from_numpy(z["x_train"]).float()
        y_tr = torch.from_numpy(z["y_train"]).long()
        x_te = torch.from_numpy(z["x_test"]).float()
        y_te = torch.from_numpy(z["y_test"]).long()
        partition = json.loads(str(z["partition"]))
    rows = {str(c): torch.as_tensor(idx, dtype=torch.long) for c, idx in partition.items()}
    users = list(rows)
    data = FederatedDataset(
        make_dataset_fn=lambda c: Dataset((x_tr[rows[c]], y_tr[rows[c]]), user_id=c),
        user_sampler=get_user_sampler("minimize_reuse", users),
    )
    _T_DATA = time.perf_counter()

    net = MLP(x_tr.shape[1], int(max(y_tr.max(), y_te.max())) + 1)
    model = PyTorchModel(
        model=net,
        local_optimizer_create=functools.partial(torch.optim.SGD, momentum=a.momentum),
        central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
    )
    backend = SimulatedBackend(
        training_data=data, val_data=None, postprocessors=[WeightByDatapoints()]
    )
    FedAvgWithoutUserEval().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=a.rounds,
            evaluation_frequency=10**9,
            train_cohort_size=len(users),
            val_cohort_size=0,
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(
            local_num_epochs=a.epochs, local_learning_rate=a.lr, local_batch_size=a.batch_size
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=None),
        callbacks=[],
        send_metrics_to_platform=False,
    )
    _T_TRAIN = time.perf_counter()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x_te).argmax(1) == y_te).float().mean().item()
    print(
        json.dumps(
            {
                "pfl": pfl.__version__,
                "torch": torch.__version__,
                "clients": len(users),
                "test_accuracy": accuracy,
                "imports_s": _T_IMPORTS - _T0,
                "data_s": _T_DATA - _T_IMPORTS,
                "train_s": _T_TRAIN - _T_DATA,
                "total_s": time.perf_counter() - _T0,
            }
        )
    )


if __name__ == "__main__":
    main()
