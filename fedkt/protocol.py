"""Names of the records exchanged between the ServerApp and the ClientApp.

Kept in one Flower-free place so the client glue, the strategies and the tests agree on
the wire format. Where Flower has a convention (``arrays``, ``config`` with
``server-round``, ``num-examples``), we use it, so Flower's own strategies (FedAvg,
FedProx, FedAdam) talk to fedkt's ClientApp unchanged.

- ``query`` (handshake, once per node): server sends ``EXPERIMENT[EXPERIMENT_KEY]``, the
  experiment config as JSON, plus ``CHECKPOINT_DIR`` (where clients save their state each
  round; a node's own ``checkpoint-dir`` node config wins) and ``RESUME_ROUND`` (0: a fresh
  start; k: restore the state saved at round <= k) and ``STATE_ON_DISK`` (true: keep the
  model in the checkpoint file only, its round in the node's state; the server says so
  where every node shares its disk: a simulation on one machine); the client replies ``METRICS``
  (partition id, sample count, ``RESUMED_ROUND``) and ``ARCH`` (its architecture and, as
  ``KERNELS``, the kernels it computes on: :func:`fedkt.provenance.kernel_identity`).
- ``train``: ``CONFIG`` (``server-round``, optional ``proximal-mu``) and, for weight-sharing
  strategies, ``ARRAYS`` (the global model). The client trains locally and replies
  ``METRICS``, plus ``KNOWLEDGE`` and/or ``ARRAYS`` as its strategy shares them.
- ``evaluate``: ``CONFIG``, optionally ``ARRAYS`` (a global model to adopt) and/or the
  client's personalised ``TARGET``; the client adopts/distils, evaluates, replies ``METRICS``.
- A node that lost its state (its SuperNode restarted mid-run) answers ``train`` with an
  error whose reason holds ``MISSED_HANDSHAKE``; the server sends it the handshake again
  when it is next sampled, with ``RESUME_ROUND`` the last finished round, so it restores
  its own newest checkpoint and takes part again.
"""

EXPERIMENT = "fedkt"
EXPERIMENT_KEY = "config"
ARCH = "arch"
KERNELS = "kernels"
CONFIG = "config"
ARRAYS = "arrays"
METRICS = "metrics"
KNOWLEDGE = "knowledge"
TARGET = "target"
VALUES = "values"
COUNTS = "counts"

SERVER_ROUND = "server-round"
PROXIMAL_MU = "proximal-mu"
PARTITION_ID = "partition-id"
NUM_EXAMPLES = "num-examples"

CHECKPOINT_DIR = "checkpoint-dir"
RESUME_ROUND = "resume-round"
RESUMED_ROUND = "resumed-round"
STATE_ON_DISK = "state-on-disk"
#: in the error reason of a node without the experiment (Flower's engines pass the
#: exception's message on, not its class)
MISSED_HANDSHAKE = "no experiment config on this node"

STATE_MODEL = "fedkt.model"
STATE_CONFIG = "fedkt.config"
#: in ``STATE_CONFIG`` under ``STATE_ON_DISK``: the round of the checkpoint holding the model
STATE_ROUND = "state-round"
