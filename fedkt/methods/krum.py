"""Krum (Blanchard et al., 2017), through Flower's own strategy: the server adopts the
one client model whose ``n - f - 2`` nearest neighbours are closest (squared L2 over
all weights), so up to ``f`` arbitrary models cannot pull the average anywhere.

``num_malicious_nodes`` is ``f``, the number of attackers the defence is sized for:
as in the paper, the defender has to choose it (default 0, Flower's: set it to the
number of attackers to withstand); a round needs at
least ``2f + 3`` clients.
"""

from fedkt.method import register
from fedkt.robust_averaging import ResilientAveraging

register(
    "krum",
    ResilientAveraging(
        description="Krum (Blanchard et al.): adopt the client model nearest its n-f-2 neighbours",
        exchanges="model weights",
        shares_weights=True,
        averaging="Krum",
        params={"num_malicious_nodes": 0},
    ),
)
