"""The Flower ClientApp. Thin glue: records in, :class:`fedkt.learner.Learner` work,
records out. Model state and the experiment config persist across rounds in the
node's ``Context.state``, so a client keeps its own (personalised) model; in a simulation on
one machine the model itself stays in the client's checkpoint file, the state holding its
round (see :func:`_state_on_disk`).

What a client does is decided by what a message carries (see ``fedkt.protocol``): a
global model in ``arrays`` is adopted, a ``target`` is distilled, and the reply shares
knowledge and/or weights as the experiment's strategy says. Flower's own FedAvg,
FedProx and FedAdam therefore drive this same app.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedkt import protocol as P
from fedkt.checkpoint import CheckpointError, load_client, save_client
from fedkt.errors import MissedHandshake
from fedkt.experiment import Experiment, experiment_from_json
from fedkt.faults import injected_delay, node_restarts
from fedkt.learner import Learner, ModelPool
from fedkt.memory import release_freed_memory
from fedkt.provenance import kernel_identity, run_device
from fedkt.strategies.base import through_codec


def release_memory_after(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower mod: handle the message, then give the memory the call freed back to the
    operating system (:mod:`fedkt.memory`): a worker serving client after client keeps
    the footprint of one call, not the high-water mark of all of them."""
    try:
        return call_next(msg, context)
    finally:
        release_freed_memory()


app = ClientApp(mods=[release_memory_after])

# One per process: a worker serving many clients builds each architecture's module once.
POOL = ModelPool()


def _partition_id(context: Context) -> int:
    """Simulation gives ``partition-id``; deployed SuperNodes set it in their node config."""
    if P.PARTITION_ID not in context.node_config:
        raise RuntimeError(
            'node config has no "partition-id" '
            '(start the SuperNode with --node-config "partition-id=N")'
        )
    return int(context.node_config[P.PARTITION_ID])


def _data_folder(context: Context) -> str | None:
    folder = context.node_config.get("data-dir")
    return str(folder) if folder else None


def _learner(context: Context) -> Learner:
    if P.STATE_CONFIG not in context.state:
        raise MissedHandshake("it missed the server's handshake (restarted since?)")
    exp = experiment_from_json(str(context.state[P.STATE_CONFIG][P.EXPERIMENT_KEY]))
    return Learner(
        exp, _partition_id(context), _kept_state(context), _data_folder(context), pool=POOL
    )


def _kept_config(context: Context) -> ConfigRecord:
    record = context.state[P.STATE_CONFIG]
    assert isinstance(record, ConfigRecord)
    return record


def _state_on_disk(context: Context) -> bool:
    """The model lives in this client's checkpoint file only, the node's state holding its
    round (the server says so where every node shares its disk: a simulation on one
    machine). Why: Flower keeps every simulated node's state in the driver process and
    ships it with each message, so 20 clients of a 6.6 MB CNN held 0.19 GiB there, and
    1,000 clients of a large model would not fit; the checkpoint is written anyway."""
    on_disk = _kept_config(context).get(P.STATE_ON_DISK, False)
    return bool(on_disk) and bool(_checkpoint_dir(context))


def _kept_state(context: Context) -> OrderedDict[str, Any] | None:
    """This client's model as its last finished call left it (None: none yet)."""
    if P.STATE_MODEL in context.state:
        return context.state[P.STATE_MODEL].to_torch_state_dict()
    state_round = _kept_config(context).get(P.STATE_ROUND, 0)
    assert isinstance(state_round, int)
    if state_round <= 0:
        return None
    folder, partition_id = _checkpoint_dir(context), _partition_id(context)
    saved = load_client(folder, partition_id, state_round)
    if saved is None or saved[0] != state_round:
        raise CheckpointError(
            f"client {partition_id}'s state of round {state_round} is gone from {folder}"
        )
    return OrderedDict(saved[1])


def _checkpoint_dir(context: Context) -> str:
    """Where this node saves its state each round: its own node config, else the folder
    the server named (a shared disk in simulation); empty: no checkpoints."""
    own = context.node_config.get(P.CHECKPOINT_DIR)
    if own:
        return str(own)
    return (
        str(context.state[P.STATE_CONFIG].get(P.CHECKPOINT_DIR, ""))
        if P.STATE_CONFIG in context.state
        else ""
    )


def _save(learner: Learner, context: Context, server_round: int) -> None:
    """Keep the client's state for its next call (the last thing a call does, so a call
    that fails leaves the state its previous one left) and checkpoint it."""
    state = learner.state_dict()
    folder = _checkpoint_dir(context)
    if folder:
        save_client(folder, learner.partition_id, server_round, state)
        if _state_on_disk(context):
            context.state.pop(P.STATE_MODEL, None)
            _kept_config(context)[P.STATE_ROUND] = server_round
            return
    context.state[P.STATE_MODEL] = ArrayRecord(state)


def _metrics(learner: Learner, values: dict[str, float]) -> MetricRecord:
    return MetricRecord(
        {P.PARTITION_ID: learner.partition_id, P.NUM_EXAMPLES: learner.num_examples, **values}
    )


def _round(msg: Message) -> int:
    return int(msg.content[P.CONFIG][P.SERVER_ROUND])


def _adopt_global(msg: Message, learner: Learner) -> OrderedDict[str, Any] | None:
    """Load the server's model when the message carries one (decoded by the method's
    weight codec, FedKD's SVD factors); returns it (or None)."""
    if P.ARRAYS not in msg.content:
        return None
    record = msg.content[P.ARRAYS]
    codec = learner.exp.method.weight_codec(learner.exp, _round(msg))
    state = (record if codec is None else through_codec(record, codec.decode)).to_torch_state_dict()
    learner.adopt(state)
    return state


def _weights_record(learner: Learner, server_round: int, start: Any) -> ArrayRecord:
    """The weights this client sends, through the method's weight codec if it has one
    (which may send their change from ``start``, the model this client was sent)."""
    weights = learner.shared_weights(server_round, start)
    codec = learner.exp.method.weight_codec(learner.exp, server_round)
    record = ArrayRecord(weights)
    if codec is None:
        return record
    base = None
    if codec.updates and start is not None:
        base = {k: v.detach().cpu().numpy() for k, v in start.items()}
    return through_codec(record, lambda state: codec.encode(state, base))


@app.query()
def handshake(msg: Message, context: Context) -> Message:
    """Receive the experiment config once, build the initial model, say who we are."""
    experiment = msg.content[P.EXPERIMENT]
    context.state[P.STATE_CONFIG] = ConfigRecord(
        {
            P.EXPERIMENT_KEY: str(experiment[P.EXPERIMENT_KEY]),
            P.CHECKPOINT_DIR: str(experiment.get(P.CHECKPOINT_DIR, "")),
            P.STATE_ON_DISK: bool(experiment.get(P.STATE_ON_DISK, False)),
        }
    )
    context.state.pop(P.STATE_MODEL, None)  # a new experiment starts from a fresh model
    resume_round = int(experiment.get(P.RESUME_ROUND, 0))
    resumed = -1
    if resume_round > 0 and _checkpoint_dir(context):
        saved = load_client(_checkpoint_dir(context), _partition_id(context), resume_round)
        if saved is not None:
            resumed, state = saved  # read here too: a bad checkpoint fails the handshake
            if _state_on_disk(context):
                _kept_config(context)[P.STATE_ROUND] = resumed
            else:
                context.state[P.STATE_MODEL] = ArrayRecord(OrderedDict(state))
    # No model is built or stored here: a client's initial model is rebuilt from the seed
    # when it is first called, so a client that is never sampled costs no model memory
    # and the handshake of 10,000 nodes no model construction.
    exp: Experiment = experiment_from_json(str(experiment[P.EXPERIMENT_KEY]))
    partition_id = _partition_id(context)
    description = Learner.describe(exp, partition_id)
    num_examples = int(exp.federation(_data_folder(context)).client_idx[partition_id].size)
    content = RecordDict(
        {
            P.METRICS: MetricRecord(
                {
                    P.PARTITION_ID: partition_id,
                    P.NUM_EXAMPLES: num_examples,
                    P.RESUMED_ROUND: resumed,
                }
            ),
            P.ARCH: ConfigRecord(
                {
                    "architecture": description,
                    P.KERNELS: kernel_identity(run_device(exp.config.device)),
                }
            ),
        }
    )
    return Message(content, reply_to=msg)


def _inject_faults(learner: Learner, server_round: int, phase: str) -> None:
    """Configured faults (off by default): crash (raise) or stall this call."""
    delay = injected_delay(learner.cfg, learner.partition_id, server_round, phase)
    if delay > 0:
        time.sleep(delay)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training on private data; share knowledge and/or weights per the strategy."""
    learner = _learner(context)
    server_round = _round(msg)
    if node_restarts(learner.cfg, learner.partition_id, server_round):
        # Replied, not raised: an engine keeps a node's state only from calls that return.
        context.state.pop(P.STATE_CONFIG, None)
        context.state.pop(P.STATE_MODEL, None)
        lost = MissedHandshake(f"client {learner.partition_id}'s node restarted (injected fault)")
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(lost)), reply_to=msg
        )
    _inject_faults(learner, server_round, "train")
    start = _adopt_global(msg, learner)
    mu = float(msg.content[P.CONFIG].get(P.PROXIMAL_MU, 0.0))
    content = RecordDict(
        {P.METRICS: _metrics(learner, learner.train(server_round, proximal_mu=mu))}
    )
    if learner.exp.exchanges_knowledge:
        values, counts = learner.knowledge(server_round)
        record = ArrayRecord({P.VALUES: Array(values)})
        if counts is not None:
            record[P.COUNTS] = Array(np.asarray(counts, dtype=np.float64))
        content[P.KNOWLEDGE] = record
    if learner.exp.method.shares_weights:
        content[P.ARRAYS] = _weights_record(learner, server_round, start)
    _save(learner, context, server_round)
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Adopt a global model and/or distil the personalised target, then evaluate."""
    learner = _learner(context)
    server_round = _round(msg)
    _inject_faults(learner, server_round, "evaluate")
    values: dict[str, float] = {}
    _adopt_global(msg, learner)
    if P.TARGET in msg.content:
        values.update(learner.finetune(msg.content[P.TARGET][P.VALUES].numpy(), server_round))
    values.update(learner.evaluate())
    _save(learner, context, server_round)
    return Message(RecordDict({P.METRICS: _metrics(learner, values)}), reply_to=msg)
