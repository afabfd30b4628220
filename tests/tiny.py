"""The smallest experiment worth simulating: a few clients on digits, seconds per run."""

TINY = [
    "num_clients=4",
    "rounds=2",
    "train.epochs=2",
    "distill.epochs=1",
    "transfer.size=200",
    "evaluation.client_test_size=100",
    "evaluation.global_test_size=200",
]
