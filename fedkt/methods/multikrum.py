"""Multi-Krum (Blanchard et al., 2017), through Flower's own strategy: Krum's score
picks ``m`` client models and the server averages them (sample-weighted), trading
some of Krum's robustness for FedAvg's variance reduction.

``num_malicious_nodes`` is the ``f`` the defence is sized for (default 0, Flower's:
set it to the number of attackers to withstand); ``num_nodes_to_select`` is ``m``, by
default ``n - f`` (every model Krum can keep, as El Mhamdi et al., 2018, use it), with
``n`` the clients per round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedkt.method import register
from fedkt.robust_averaging import ResilientAveraging

if TYPE_CHECKING:
    from fedkt.experiment import Experiment


class MultiKrum(ResilientAveraging):
    def averaging_params(self, exp: Experiment) -> dict[str, Any]:
        params = dict(exp.params)
        if params["num_nodes_to_select"] is None:
            n = exp.config.clients_per_round()
            params["num_nodes_to_select"] = n - int(params["num_malicious_nodes"])
        return params


register(
    "multikrum",
    MultiKrum(
        description="Multi-Krum (Blanchard et al.): average the m client models Krum scores best",
        exchanges="model weights",
        shares_weights=True,
        averaging="MultiKrum",
        params={"num_malicious_nodes": 0, "num_nodes_to_select": None},
    ),
)
