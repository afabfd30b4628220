"""The Flower ClientApp. Thin glue: records in, :class:`fedkt.learner.Learner` work,
records out. Model state and the experiment config persist across rounds in the
node's ``Context.state``, so a client keeps its own (personalised) model."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedkt import protocol as P
from fedkt.config import ExperimentConfig, config_from_json
from fedkt.learner import Learner

app = ClientApp()


def _partition_id(context: Context, cfg: ExperimentConfig) -> int:
    """Simulation gives ``partition-id``; deployed SuperNodes set it in their node config."""
    if "partition-id" not in context.node_config:
        raise RuntimeError("node config has no 'partition-id' (start the SuperNode with --node-config \"partition-id=N\")")
    return int(context.node_config["partition-id"])


def _data_folder(context: Context) -> str | None:
    value = context.node_config.get("data-dir")
    return str(value) if value else None


def _learner(context: Context) -> Learner:
    if P.STATE_CONFIG not in context.state:
        raise RuntimeError("this node has no experiment config: it missed the server's handshake")
    cfg = config_from_json(str(context.state[P.STATE_CONFIG][P.CONFIG_KEY]))
    state = None
    if P.STATE_MODEL in context.state:
        state = context.state[P.STATE_MODEL].to_torch_state_dict()
    return Learner(cfg, _partition_id(context, cfg), state, _data_folder(context))


def _save(learner: Learner, context: Context) -> None:
    context.state[P.STATE_MODEL] = ArrayRecord(learner.state_dict())


def _metrics(learner: Learner, values: dict[str, float]) -> MetricRecord:
    return MetricRecord({P.PARTITION_ID: learner.partition_id, P.NUM_EXAMPLES: learner.num_examples, **values})


@app.query()
def handshake(msg: Message, context: Context) -> Message:
    """Receive the experiment config once, build the initial model, say who we are."""
    cfg_json = str(msg.content[P.CONFIG_RECORD][P.CONFIG_KEY])
    context.state[P.STATE_CONFIG] = ConfigRecord({P.CONFIG_KEY: cfg_json})
    context.state.pop(P.STATE_MODEL, None)  # a new experiment starts from a fresh model
    learner = _learner(context)
    _save(learner, context)
    content = RecordDict({
        P.INFO_RECORD: _metrics(learner, {}),
        P.ARCH_RECORD: ConfigRecord({"architecture": learner.architecture}),
    })
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training on private data; share knowledge if the strategy exchanges any."""
    learner = _learner(context)
    server_round = int(msg.content[P.ROUND_RECORD]["round"])
    metrics = learner.train(server_round)
    content = RecordDict({P.METRICS_RECORD: _metrics(learner, metrics)})
    if learner.strategy.exchanges_knowledge:
        content[P.KNOWLEDGE_RECORD] = ArrayRecord({P.ARRAY_KEY: Array(learner.knowledge())})
    _save(learner, context)
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Fine-tune on the personalised target (if any), then evaluate."""
    learner = _learner(context)
    server_round = int(msg.content[P.ROUND_RECORD]["round"])
    values: dict[str, float] = {}
    if P.TARGET_RECORD in msg.content:
        target = np.asarray(msg.content[P.TARGET_RECORD][P.ARRAY_KEY].numpy())
        values["distill_loss"] = learner.finetune(target, server_round)
        _save(learner, context)
    values.update(learner.evaluate())
    return Message(RecordDict({P.METRICS_RECORD: _metrics(learner, values)}), reply_to=msg)
