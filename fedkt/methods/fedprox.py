"""FedProx (Li et al., 2020), through Flower's own strategy: FedAvg on the server, a
proximal term mu/2 ||w - w_global||^2 in every client's local training (Flower sends mu
to the clients with each round's config)."""

from fedkt.method import Method, register

register(
    "fedprox",
    Method(
        description=(
            "FedProx (Li et al.): FedAvg + proximal term mu/2 ||w - w_global||^2 on clients"
        ),
        exchanges="model weights",
        shares_weights=True,
        averaging="FedProx",
        params={"proximal_mu": 0.01},
    ),
)
