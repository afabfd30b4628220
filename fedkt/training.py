"""Training loops shared by every strategy: supervised local training, distillation on
the transfer set, knowledge-free evaluation. Plain tensors and index permutations
(no DataLoader) keep per-client overhead low when thousands of clients are simulated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from fedkt.config import DistillConfig, TrainConfig
from fedkt.errors import ConfigError
from fedkt.models import Classifier


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when this process sees a GPU, else CPU. ``cuda`` without a visible
    GPU is a configuration error (said before any work starts, not mid-run)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device: 'cuda' was asked for but torch sees no CUDA GPU here (use device: auto or cpu)"
        )
    return torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; a no-op context when disabled."""
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def make_optimizer(
    model: nn.Module, optimizer: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    if optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def _batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False):
    """One shuffled pass of row indices in mini-batches. With ``drop_last`` a final batch
    smaller than ``batch_size`` is skipped, unless it is the only one: mean reduction
    weighs each of its rows ``batch_size / len`` times as much as a full batch's, and on a
    client with few rows one hard sample can then carry a whole step (measured: one
    3-row batch took a 43-row client from 87% to 26% test accuracy; BENCHMARKS.md). The
    permutation is drawn either way, so the generator's later draws do not change."""
    order = torch.randperm(n, generator=generator)
    end = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, end, batch_size):
        yield order[start : start + batch_size]


class Fit(NamedTuple):
    """What a training call did: the mean loss of its last pass over the data (NaN when
    it took no step) and the optimiser steps it took (the unit of every budget)."""

    loss: float
    steps: int


def _fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    n: int,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    amp: bool = False,
    steps: int | None = None,
    clip_norm: float | None = None,
    drop_last: bool = False,
) -> Fit:
    """The one training loop: shuffled mini-batches of row indices, ``batch_loss(idx)``
    per step (under autocast when ``amp``; float16 gradients are loss-scaled), the
    gradient's norm clipped at ``clip_norm`` when one is given, a short final batch
    skipped with ``drop_last`` (see :func:`_batches`).

    ``epochs`` full passes, or with ``steps`` exactly that many optimiser steps (as many
    passes as it takes, the last one cut short), so that budgets can be matched in steps."""
    model.train()
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    last = float("nan")
    taken = 0
    passes = 0
    while n > 0 and (taken < steps if steps is not None else passes < epochs):
        total, count = 0.0, 0
        for idx in _batches(n, batch_size, generator, drop_last):
            if steps is not None and taken >= steps:
                break
            opt.zero_grad(set_to_none=True)
            with autocast(device, amp):
                loss = batch_loss(idx).float()
            scaler.scale(loss).backward()
            if clip_norm is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(idx)
            count += len(idx)
            taken += 1
        last = total / max(count, 1)
        passes += 1
    return Fit(last, taken)


def train_supervised(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    proximal_mu: float = 0.0,
    steps: int | None = None,
    extra: Callable[[torch.Tensor], torch.Tensor] | None = None,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Fit:
    """Cross-entropy training on private data: ``cfg.epochs`` passes, or exactly
    ``steps`` optimiser steps.

    ``proximal_mu > 0`` adds FedProx's mu/2 * ||w - w_start||^2, which keeps a client's
    update close to the global model it started from under heterogeneous data.
    ``extra(idx)``: a term a method adds to each batch's loss (FedGen's generated
    embeddings through the head). ``objective(xb, yb)``: the batch's loss in place of the
    cross-entropy, for a method whose term needs the model's inner outputs of the same
    forward pass (FedProto's CE + lambda MSE of the embedding to its class prototype).
    """
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb, yb = x[idx].to(device), y[idx].to(device)
        loss = F.cross_entropy(model(xb), yb) if objective is None else objective(xb, yb)
        if anchor is not None:
            loss = loss + 0.5 * proximal_mu * sum(
                ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor)
            )
        if extra is not None:
            loss = loss + extra(idx)
        return loss

    return _fit(
        model,
        opt,
        len(x),
        cfg.epochs,
        cfg.batch_size,
        generator,
        batch_loss,
        amp=cfg.amp,
        steps=steps,
        drop_last=cfg.drop_last,
    )


def train_mutual(
    model: nn.Module,
    partner: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    pair_loss: Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int | None = None,
    also: nn.Module | None = None,
    clip_norm: float | None = None,
) -> Fit:
    """Two models learning together on the same private batches (FML's model and meme):
    ``pair_loss(model, partner, xb, yb)`` is the sum of their two losses, each treating
    the other model's output as a fixed target, so that one backward pass gives each
    model its own loss's gradient. One optimiser (``cfg``'s) over both models' weights
    steps each model once per batch, as two optimisers with the same settings would; a
    batch counts as one step of the budget, and the reported loss is the pair's sum.
    ``also``: a module the losses use that learns with them (FedKD's hidden-state map);
    ``clip_norm``: the gradient norm of the whole (pair and ``also``) clipped there."""
    device = next(model.parameters()).device
    pair = nn.ModuleList([model, partner, *([also] if also is not None else [])])
    opt = make_optimizer(pair, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    return _fit(
        pair,
        opt,
        len(x),
        cfg.epochs,
        cfg.batch_size,
        generator,
        lambda idx: pair_loss(model, partner, x[idx].to(device), y[idx].to(device)),
        amp=cfg.amp,
        steps=steps,
        clip_norm=clip_norm,
        drop_last=cfg.drop_last,
    )


def distill(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_fn: Callable[..., torch.Tensor],
    cfg: DistillConfig,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    private: tuple[torch.Tensor, torch.Tensor] | None = None,
    anchor_weight: float = 0.0,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    amp: bool = False,
    steps: int | None = None,
) -> Fit:
    """Fit ``model`` to ``target`` (one row per sample of ``x``) with ``loss_fn``.

    With ``anchor_weight`` lambda > 0 and ``private`` data, each step also adds lambda * CE
    on a private batch, which anchors the student to its own task while it absorbs the
    fused knowledge.
    """
    device = next(model.parameters()).device
    opt = make_optimizer(model, optimizer, cfg.lr, momentum)
    uses_features = getattr(loss_fn, "uses_features", False)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb, tb = x[idx].to(device), target[idx].to(device)
        yb = labels[idx].to(device) if labels is not None else None
        if uses_features:
            clf = cast(Classifier, model)  # feature losses need embed/head (every fedkt model)
            feats = clf.embed(xb)
            loss = loss_fn(clf.head(feats), tb, yb, feats)
        else:
            loss = loss_fn(model(xb), tb, yb)
        if anchor_weight > 0 and private is not None:
            pidx = torch.randint(len(private[0]), (len(idx),), generator=generator)
            loss = loss + anchor_weight * F.cross_entropy(
                model(private[0][pidx].to(device)), private[1][pidx].to(device)
            )
        return loss

    return _fit(
        model, opt, len(x), cfg.epochs, cfg.batch_size, generator, batch_loss, amp=amp, steps=steps
    )


#: Samples per forward pass when scoring or extracting knowledge. Not larger: a batch's
#: activations (and oneDNN's unfolded inputs) are the transient peak of every worker
#: (cnn-fedavg's first convolution is 0.1 GB at 1,024 samples; 1,024 -> 256 -> 64 each took
#: about 0.06 GiB off each worker's peak on the 20-client HtFLlib workload).
EVAL_BATCH = 64


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = EVAL_BATCH,
) -> torch.Tensor:
    """``fn(batch)`` (default: the model's logits) on ``x`` in eval mode, batch by batch,
    as float32 on CPU; the model's train/eval mode is restored afterwards.

    The result is one tensor allocated at the first batch and filled in place, not a list
    of per-batch outputs joined at the end: each small output allocated right after a
    batch's multi-MB activations pinned the heap above their freed space, so glibc could
    neither reuse nor return it, and a worker's heap grew by up to 0.35 GB over one pass
    of a client's ~8,000 samples (measured on cnn-fedavg; flat with this layout). Same
    values either way."""
    fn = fn or model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: torch.Tensor | None = None
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size]
        n = len(batch)
        o = fn(padded_batch(batch, batch_size).to(device))[:n]
        if out is None:
            out = torch.empty((len(x), *o.shape[1:]), dtype=torch.float32)
        out[i : i + n] = o
        del o  # (before the next batch's activations are allocated)
    model.train(was_training)
    return out if out is not None else torch.empty(0)


def padded_batch(batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``batch`` made up to the next power of two samples (at most ``batch_size``) by
    repeating its first rows; callers keep the outputs of the first ``len(batch)`` rows.

    Why: oneDNN, PyTorch's CPU convolution backend, compiles and caches kernels per input
    shape, several MB each, and keeps up to 1,024 of them. Every client's data sets end
    in a batch of another size, so unpadded a worker that serves many clients grows by a
    cache entry per client and set (measured on cnn-fedavg: 36 odd sizes added 0.1-0.2 GB
    to a process; with the sizes of this function the cache holds at most
    log2(batch_size) + 1 shapes per model). Inference is per sample in eval mode and the
    repeated rows' outputs are dropped, so they cost time only (the last batch of a pass at
    most doubles); a kernel chosen for another batch size may round differently.
    """
    n = len(batch)
    if n == 0:
        return batch
    size = min(batch_size, 1 << (n - 1).bit_length())
    return batch if size <= n else torch.cat([batch, batch[: size - n]])


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH
) -> float:
    if len(x) == 0:
        return float("nan")
    return float((predict(model, x, batch_size=batch_size).argmax(dim=1) == y).double().mean())


class EarlyStoppedFit(NamedTuple):
    """What :func:`distill_early_stopped` did: optimiser steps taken, the step whose
    weights were kept (0: the starting weights), validation accuracy at the start and
    of the kept weights."""

    steps: int
    kept_step: int
    start_accuracy: float
    kept_accuracy: float


def distill_early_stopped(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_fn: Callable[..., torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator,
    *,
    max_steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    clip_norm: float = 5.0,
    eval_every: int = 100,
    patience: int = 1000,
    keep_start_if_better: bool = False,
) -> EarlyStoppedFit:
    """Distil ``target`` into ``model`` on ``x`` with Adam, a per-step cosine-annealed
    learning rate and gradient clipping; every ``eval_every`` steps score the model on
    the labelled ``validation`` set, keep the best weights, and stop after ``patience``
    steps without improvement. The model ends holding the kept weights.

    This is the server step of FedDF (Lin et al., 2020, and its reference code): a
    fixed number of distillation steps on a teacher that can be wrong everywhere (the
    mean of clients that each know a few classes) may carry the student anywhere, so
    the paper selects the student on held-out labelled data. With
    ``keep_start_if_better`` the starting weights compete too (the reference code's
    ``return_best_model_on_val``), so the step can never leave the server with a
    model worse on validation than the one it started from."""
    device = next(model.parameters()).device
    val_x, val_y = validation

    def score() -> float:
        return accuracy(model, val_x, val_y)

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    start = score()
    best_acc, best_step, best_state = -1.0, 0, snapshot()
    if keep_start_if_better:
        best_acc = start
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(max_steps, 1))
    taken = 0
    model.train()
    while taken < max_steps and len(x) > 0:
        for idx in _batches(len(x), batch_size, generator):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx].to(device)), target[idx].to(device)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            schedule.step()
            taken += 1
            if taken % eval_every == 0 or taken == max_steps:
                acc = score()
                model.train()
                if acc > best_acc:
                    best_acc, best_step, best_state = acc, taken, snapshot()
            if taken >= max_steps or taken - best_step >= patience:
                break
        if taken - best_step >= patience:
            break
    model.load_state_dict(best_state)
    return EarlyStoppedFit(taken, best_step, start, start if best_step == 0 else best_acc)
