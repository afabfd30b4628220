"""The baseline of the overhead benchmark: KnFu written as a researcher would write it
in plain PyTorch, one process, every client's model in a Python list, no Flower, no
Ray, no messages, no checkpoints, no results files.

It does the same work per round as a fedkt KnFu simulation of the same config: each
client trains on its private data (SGD, same epochs and batch size) and measures its
local accuracy, extracts soft labels on the transfer set; the server computes KnFu's
personalised targets (the same pure function fedkt uses: the method's math is not
overhead); each client distils its target (KL, same epochs and batch size) and is
evaluated on its own test split and the global test subset. The data layout (who
holds which samples) and the initial weights are fedkt's, so both sides train on the
same data from the same start; random batch orders differ, so accuracies agree
closely, not bit for bit.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedkt.config import ExperimentConfig
from fedkt.data.federation import federation_for
from fedkt.learner import initial_model_seed
from fedkt.methods.knfu import knfu_weights
from fedkt.models import build_model


def _sgd(model: torch.nn.Module, lr: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        int((model(x[i : i + 1024]).argmax(1) == y[i : i + 1024]).sum())
        for i in range(0, len(x), 1024)
    )
    model.train()
    return correct / max(len(x), 1)


def run_plain_knfu(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run ``cfg`` (a KnFu config, every client every round) as a plain loop; returns the
    final ALMA, the wall time (data layout and model construction included) and each
    round's wall time."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    fed = federation_for(cfg)
    data = [fed.client_data(i) for i in range(cfg.num_clients)]
    transfer_x = fed.transfer_tensors()[0]
    models = [
        build_model(arch, fed.input_shape, fed.num_classes, seed=initial_model_seed(cfg.seed, arch))
        for arch in fed.architectures
    ]
    tr, ds = cfg.train, cfg.distill
    params = cfg.strategy.fusion_params
    temperature = cfg.strategy.temperature
    alma = float("nan")
    round_walls = []
    for _ in range(cfg.rounds):
        t_round = time.perf_counter()
        soft = []
        for model, d in zip(models, data):
            opt = _sgd(model, tr.lr, tr.momentum)
            for _ in range(tr.epochs):
                for idx in torch.randperm(len(d.train_x)).split(tr.batch_size):
                    opt.zero_grad()
                    F.cross_entropy(model(d.train_x[idx]), d.train_y[idx]).backward()
                    opt.step()
            _accuracy(model, d.test_x, d.test_y)  # the local accuracy fedkt reports
            model.eval()
            with torch.no_grad():
                soft.append(torch.softmax(model(transfer_x) / temperature, dim=-1).numpy())
            model.train()
        probs = np.stack(soft)
        weights = knfu_weights(probs, **params)
        targets = torch.from_numpy(np.einsum("nm,mjc->njc", weights, probs).astype(np.float32))
        accs = []
        for model, d, target in zip(models, data, targets):
            opt = _sgd(model, ds.lr, tr.momentum)
            for _ in range(ds.epochs):
                for idx in torch.randperm(len(transfer_x)).split(ds.batch_size):
                    opt.zero_grad()
                    log_p = F.log_softmax(model(transfer_x[idx]) / temperature, dim=-1)
                    t = target[idx]
                    ((torch.xlogy(t, t) - t * log_p).sum(1).mean() * temperature**2).backward()
                    opt.step()
            accs.append(_accuracy(model, d.test_x, d.test_y))
            _accuracy(model, d.global_x, d.global_y)
        alma = float(np.mean(accs))
        round_walls.append(time.perf_counter() - t_round)
    return {"alma": alma, "wall": time.perf_counter() - start, "round_walls": round_walls}
