"""Names of the records exchanged between the ServerApp and the ClientApp.

Kept in one Flower-free place so the client glue, the strategies and the tests agree
on the wire format without importing each other.

- ``query`` (handshake, once per node): server sends ``CONFIG_RECORD[CONFIG_KEY]``, the
  experiment config as JSON; the client replies ``INFO_RECORD`` (partition id, sample
  count) and ``ARCH_RECORD`` (its architecture).
- ``train``: server sends ``ROUND_RECORD``; the client trains locally and replies
  ``METRICS_RECORD`` and, when the strategy exchanges knowledge, ``KNOWLEDGE_RECORD``.
- ``evaluate``: server sends ``ROUND_RECORD`` and, when there is one, the client's
  personalised ``TARGET_RECORD``; the client distils it, evaluates and replies
  ``METRICS_RECORD``.
"""

CONFIG_RECORD = "fedkt"
CONFIG_KEY = "config"
ROUND_RECORD = "round"
INFO_RECORD = "info"
ARCH_RECORD = "arch"
METRICS_RECORD = "metrics"
KNOWLEDGE_RECORD = "knowledge"
TARGET_RECORD = "target"
ARRAY_KEY = "values"
STATE_MODEL = "fedkt.model"
STATE_CONFIG = "fedkt.config"

PARTITION_ID = "partition_id"
NUM_EXAMPLES = "num_examples"
