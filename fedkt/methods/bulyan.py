"""Bulyan (El Mhamdi et al., 2018), through Flower's own strategy: Krum picks
``n - 2f`` client models, then each coordinate is the mean of the ``n - 4f`` values
nearest that coordinate's median, so an attacker cannot hide a large change in a few
coordinates of an otherwise plausible model.

``num_malicious_nodes`` is the ``f`` the defence is sized for (default 0, Flower's:
set it to the number of attackers to withstand); a round needs at least ``4f + 3``
clients (Flower skips smaller rounds; fedkt refuses the config).
"""

from fedkt.method import register
from fedkt.robust_averaging import ResilientAveraging


class Bulyan(ResilientAveraging):
    def min_round_size(self, f: int) -> int:
        return 4 * f + 3


register(
    "bulyan",
    Bulyan(
        description="Bulyan (El Mhamdi et al.): Krum selection, then a trimmed mean per weight",
        exchanges="model weights",
        shares_weights=True,
        averaging="Bulyan",
        params={"num_malicious_nodes": 0},
    ),
)
