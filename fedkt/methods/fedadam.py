"""FedAdam (Reddi et al., 2021), through Flower's own strategy: Adam on the server over
the averaged client update. ``eta`` 0.03 is fedkt's default (tuned on digits)."""

from fedkt.method import Method, register

register(
    "fedadam",
    Method(
        description="FedAdam (Reddi et al.): Adam on the server over averaged client updates",
        exchanges="model weights",
        shares_weights=True,
        averaging="FedAdam",
        params={"eta": 0.03, "eta_l": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3},
    ),
)
