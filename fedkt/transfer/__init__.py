"""The three parts of every transfer method: knowledge (client), fusion (server), loss (client).

Each part is a pure function (or a small class wrapping one) on arrays/tensors, registered
by name so a strategy is a composition of names. None of them imports Flower.
"""

import fedkt.methods  # noqa: E402,F401 - method files register their own parts
from fedkt.transfer.fusion import FUSIONS, FusionResult
from fedkt.transfer.knowledge import KNOWLEDGE
from fedkt.transfer.losses import LOSSES

__all__ = ["FUSIONS", "KNOWLEDGE", "LOSSES", "FusionResult"]
