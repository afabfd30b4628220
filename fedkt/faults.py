"""Config-driven client faults and attacks, to test how strategies hold up.

Every decision is derived from the seed, the client, the round and the phase, so a
faulty run is as reproducible as a clean one and every strategy in a comparison meets
the very same faults:

- ``crash``: probability that a client fails a call (its reply is an error);
- ``straggle``: probability that a client answers a call only after ``straggle_seconds``
  (by default past the round timeout, so the server goes on without it);
- ``leave``: fraction of clients that leave for good from round ``leave_round`` on;
- ``restart``: probability that a client's node restarts before its train call, losing
  the experiment and its model (as a SuperNode restarted mid-run): it fails that round,
  the server sends it the experiment again when next sampled, and it restores its own
  newest checkpoint;
- ``byzantine``: fraction of clients that send hostile (well-formed) knowledge and/or
  weights, whichever their strategy has them send. Knowledge: ``random`` logits,
  ``flip`` (label-flipped: class c's score moved to class C-1-c) or ``scale`` (logits
  multiplied by ``attack_scale``: overconfident knowledge). Weights, as an update
  ``delta = w - w_global`` from the model the client was sent: ``random`` (Gaussian
  noise, per tensor ``attack_scale`` times the honest update's RMS: Blanchard et al.'s
  Gaussian attack, scaled to the model), ``flip`` (``-delta``: the sign-flipping
  attack, a step of gradient *ascent*) or ``scale`` (``attack_scale * delta``: the
  boosted update of model-replacement attacks, Bagdasaryan et al.). Integer tensors
  (BatchNorm's step counter) are sent as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedkt.config import ExperimentConfig, FaultConfig
from fedkt.seeding import rng


class ClientCrash(RuntimeError):
    """Raised inside a client to simulate a crash (the server records a failed reply)."""


def _chosen(cfg: ExperimentConfig, fraction: float, purpose: str) -> frozenset[int]:
    k = int(round(fraction * cfg.num_clients))
    return (
        frozenset(
            int(i) for i in rng(cfg.seed, purpose).choice(cfg.num_clients, size=k, replace=False)
        )
        if k
        else frozenset()
    )


def byzantine_clients(cfg: ExperimentConfig) -> frozenset[int]:
    """Partition ids of the attackers (round(byzantine * num_clients) of them)."""
    return _chosen(cfg, cfg.faults.byzantine, "byzantine")


def leaving_clients(cfg: ExperimentConfig) -> frozenset[int]:
    return _chosen(cfg, cfg.faults.leave, "leave")


def injected_delay(
    cfg: ExperimentConfig, partition_id: int, server_round: int, phase: str
) -> float:
    """Seconds this call should stall before answering (0: none); raises ClientCrash
    when the call should fail."""
    f = cfg.faults
    if partition_id in leaving_clients(cfg) and server_round >= f.leave_round:
        raise ClientCrash(
            f"client {partition_id} left the federation in round {f.leave_round} (injected fault)"
        )
    draw = rng(cfg.seed, "fault", partition_id, server_round, phase).random(2)
    if draw[0] < f.crash:
        raise ClientCrash(
            f"client {partition_id} crashed in round {server_round} {phase} (injected fault)"
        )
    if draw[1] < f.straggle:
        return f.straggle_seconds if f.straggle_seconds is not None else cfg.round_timeout + 2.0
    return 0.0


def node_restarts(cfg: ExperimentConfig, partition_id: int, server_round: int) -> bool:
    """Whether this client's node restarts (loses its state) before its train call."""
    f = cfg.faults.restart
    return f > 0 and rng(cfg.seed, "restart", partition_id, server_round).random() < f


def corrupt_knowledge(
    values: np.ndarray, space: str, faults: FaultConfig, generator: np.random.Generator
) -> np.ndarray:
    """A Byzantine client's knowledge: the honest ``values`` (rows of probabilities,
    logits or embeddings) replaced per ``faults.attack``, in the same space and shape so
    that it passes the server's format checks."""
    v = np.asarray(values, dtype=np.float64)
    if space == "probs":
        logits = np.log(np.clip(v, 1e-12, None))
    else:
        logits = v
    if faults.attack == "random":
        logits = generator.normal(0.0, 5.0, size=v.shape)
    elif faults.attack == "flip":
        logits = logits[..., ::-1]
    else:  # scale
        logits = logits * faults.attack_scale
    if space == "probs":
        z = logits - logits.max(axis=-1, keepdims=True)
        p = np.exp(z)
        return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)
    return logits.astype(np.float32)


def corrupt_weights(
    weights: Mapping[str, np.ndarray],
    start: Mapping[str, np.ndarray],
    faults: FaultConfig,
    generator: np.random.Generator,
) -> dict[str, np.ndarray]:
    """A Byzantine client's model: its honest ``weights`` after training, turned per
    ``faults.attack`` into a hostile update from ``start`` (the model it was sent), in
    the same keys, shapes and dtypes so that the server's checks pass.

    Why on the update and not the weights: a defence such as Krum compares what
    clients send with each other, and honest clients' models all sit near ``start``;
    an attack sized to the honest update is the one a defence has to tell apart."""
    out: dict[str, np.ndarray] = {}
    for key, w in weights.items():
        w = np.asarray(w)
        if not np.issubdtype(w.dtype, np.floating):
            out[key] = w
            continue
        base = np.asarray(start[key], dtype=np.float64)
        delta = w.astype(np.float64) - base
        if faults.attack == "random":
            rms = float(np.sqrt(np.mean(np.square(delta)))) if delta.size else 0.0
            delta = generator.normal(0.0, faults.attack_scale * rms, size=delta.shape)
        elif faults.attack == "flip":
            delta = -delta
        else:  # scale
            delta = faults.attack_scale * delta
        out[key] = (base + delta).astype(w.dtype)
    return out
