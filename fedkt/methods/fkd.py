"""Vanilla federated knowledge distillation: every client distils the uniform mean of all
participants' soft labels on the transfer set (Hinton KL, T^2)."""

from fedkt.method import SOFT_LABELS, Method, register

register(
    "fkd",
    Method(
        description="vanilla federated KD: uniform mean of soft labels, distilled with KL",
        exchanges=SOFT_LABELS,
        knowledge="soft_labels",
        fusion="mean",
        loss="kl",
    ),
)
