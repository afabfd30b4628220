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


def in_order(run):
    """A comparison's cell runner (:data:`fedkt.compare.RunCells`) that runs its cells one
    after another with ``run(cfg, cdir)``: what the tests' stand-in simulations need."""
    from fedkt.compare import run_in_order

    return run_in_order(lambda task: run(task.config, task.cdir), lambda m: None)
