"""What the Byzantine-resilient weight aggregators share (Krum, Multi-Krum, Bulyan,
coordinate-wise median and trimmed mean: the defences people already use against
poisoned weights, run through Flower's own strategies by their method files).

Each one withstands ``f`` attackers only when a round has enough clients: Krum needs
``n >= 2f + 3`` (Blanchard et al., 2017: ``2f + 2 < n``), Bulyan ``n >= 4f + 3``
(El Mhamdi et al., 2018). Flower skips a Bulyan round that is too small with a warning
and runs Krum below its bound without one; fedkt refuses such a config up front, with
one line, rather than report a defence that was not in force.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedkt.errors import ConfigError
from fedkt.method import Method

if TYPE_CHECKING:
    from fedkt.experiment import Experiment

#: ``strategy.params`` every resilient aggregator may take, and what each must be.
_INTEGER_PARAMS = ("num_malicious_nodes", "num_nodes_to_select")


class ResilientAveraging(Method):
    """A weights-only method whose Flower strategy tolerates ``num_malicious_nodes``
    attackers when a round has at least :meth:`min_round_size` clients."""

    def min_round_size(self, f: int) -> int:
        """Fewest clients a round needs for the defence to hold against ``f`` attackers
        (default: Krum's ``2f + 3``)."""
        return 2 * f + 3

    def check_param(self, name: str, value: Any) -> Any:
        if name in _INTEGER_PARAMS:
            if value is None and name == "num_nodes_to_select":
                return value
            low = 0 if name == "num_malicious_nodes" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            return value
        if name == "beta":
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not 0 <= value < 0.5:
                raise ValueError(
                    f"beta (the fraction cut at each end) must be in [0, 0.5), got {value!r}"
                )
            return value
        return super().check_param(name, value)

    def validate(self, exp: Experiment) -> None:
        f = int(exp.params.get("num_malicious_nodes", 0))
        n = exp.config.clients_per_round()
        need = self.min_round_size(f)
        if n < need:
            raise ConfigError(
                f"strategy.params.num_malicious_nodes: {exp.name} withstands {f} attacker(s) "
                f"only with at least {need} clients per round; this run samples {n} (lower "
                "num_malicious_nodes, or raise num_clients / fraction)"
            )
