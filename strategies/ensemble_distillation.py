"""FedDF (Lin et al., 2020): FedAvg, then server-side ensemble distillation.

Clients start each round from the global model, train locally and send both their
weights and their logits on the transfer set. The server averages the weights (Flower's
own aggregation) and distils the clients' mean logits, as soft labels, into that average
on the transfer set; the distilled model is the next global model, which every client
adopts in the evaluate phase.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedkt import protocol as P
from fedkt.config import ExperimentConfig
from fedkt.data.federation import federation_for
from fedkt.models import build_model
from fedkt.seeding import torch_generator
from fedkt.training import distill, resolve_device
from strategies.knowledge_transfer import KnowledgeTransfer


class EnsembleDistillation(KnowledgeTransfer):
    """KnowledgeTransfer whose fused knowledge trains one global student on the server."""

    def __init__(self, cfg: ExperimentConfig, architecture: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cfg = cfg
        fed = federation_for(cfg)
        self.transfer_x = fed.transfer_tensors()[0]
        self.student = build_model(architecture, fed.input_shape, fed.num_classes).to(resolve_device(cfg.device))

    def train_content(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        content = super().train_content(server_round, arrays, config)
        content[P.ARRAYS] = arrays
        return content

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted = self.accepted_knowledge(server_round, replies)
        by_pid = self.accepted_replies  # only replies whose knowledge passed validation
        expected = {k: tuple(v.shape) for k, v in self.student.state_dict().items()}
        for pid in [p for p, _, _ in accepted]:
            try:
                shapes = {k: tuple(a.shape) for k, a in by_pid[pid].content[P.ARRAYS].items()}
                if shapes != expected:
                    raise ValueError("its weights do not match the global model's layers")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.reject(server_round, by_pid[pid], f"unusable weights ({exc})")
                by_pid.pop(pid)
        accepted = [a for a in accepted if a[0] in by_pid]
        self.participants = [pid for pid, _, _ in accepted]
        if len(accepted) < self.min_clients:
            self.skipped = True
            return None, None
        targets = self.fuse(accepted)
        self.targets = {}  # clients adopt the distilled global model instead of a target
        averaged = aggregate_arrayrecords(
            [RecordDict({P.ARRAYS: by_pid[pid].content[P.ARRAYS], P.METRICS: by_pid[pid].content[P.METRICS]}) for pid in self.participants],
            P.NUM_EXAMPLES,
        )
        self.student.load_state_dict(averaged.to_torch_state_dict())
        # Every row of the fused target is the same ensemble mean; distil it as soft labels.
        soft = torch.softmax(torch.from_numpy(targets[0]) / self.recipe.temperature, dim=-1)
        loss = distill(
            self.student, self.transfer_x, soft, self.recipe.make_loss(), self.cfg.distill,
            torch_generator(self.cfg.seed, "server-distill", server_round),
            optimizer=self.cfg.train.optimizer, momentum=self.cfg.train.momentum, amp=self.cfg.train.amp,
        )
        return ArrayRecord(self.student.state_dict()), MetricRecord({"server_distill_loss": float(loss)})

    def evaluate_content(self, server_round: int, pid: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        content = super().evaluate_content(server_round, pid, arrays, config)
        content[P.ARRAYS] = arrays
        return content
