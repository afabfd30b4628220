"""FedAvg (McMahan et al., 2017), through Flower's own strategy."""

from fedkt.method import Method, register

register(
    "fedavg",
    Method(
        description="FedAvg (McMahan et al.): sample-weighted average of model weights",
        exchanges="model weights",
        shares_weights=True,
        averaging="FedAvg",
    ),
)
