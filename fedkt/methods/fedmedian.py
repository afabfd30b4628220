"""Coordinate-wise median (Yin et al., 2018), through Flower's own FedMedian: each
weight of the global model is the median of the clients' values for it (unweighted),
so fewer than half the clients cannot move it past the honest ones.
"""

from fedkt.method import register
from fedkt.robust_averaging import ResilientAveraging


class FedMedian(ResilientAveraging):
    def min_round_size(self, f: int) -> int:
        return 1  # no f to size: the median holds while attackers are under half


register(
    "fedmedian",
    FedMedian(
        description="coordinate-wise median of client weights (Yin et al.; Flower's FedMedian)",
        exchanges="model weights",
        shares_weights=True,
        averaging="FedMedian",
    ),
)
