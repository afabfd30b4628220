"""Coordinate-wise trimmed mean (Yin et al., 2018), through Flower's own FedTrimmedAvg:
for each weight, the ``beta`` fraction of the largest and of the smallest client values
is dropped and the rest averaged (unweighted). ``beta`` 0.2 is Flower's default.
"""

from fedkt.method import register
from fedkt.robust_averaging import ResilientAveraging


class FedTrimmedAvg(ResilientAveraging):
    def min_round_size(self, f: int) -> int:
        return 1  # sized by beta, not f


register(
    "fedtrimmedavg",
    FedTrimmedAvg(
        description="coordinate-wise trimmed mean of client weights (Yin et al.; Flower's)",
        exchanges="model weights",
        shares_weights=True,
        averaging="FedTrimmedAvg",
        params={"beta": 0.2},
    ),
)
