"""Local training only: nothing is exchanged. The bar every method must clear."""

from fedkt.method import Method, register

register(
    "local",
    Method(
        description="local training only, no exchange (the bar every method must clear)",
        exchanges="nothing",
    ),
)
