"""The Docker and compose files cannot be built here (no Docker): check that they stay
consistent with the deployment scripts the loopback integration test runs."""

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_dockerfile_targets_use_the_tested_scripts():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    stages = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", text, re.M | re.S)
    }
    targets = {
        name: re.search(r'ENTRYPOINT \["([^"]+)"\]', body).group(1)
        for name, body in stages.items()
        if "ENTRYPOINT" in body
    }
    assert targets["superlink"] == "/opt/fedkt/deploy/scripts/superlink.sh"
    assert targets["supernode"] == "/opt/fedkt/deploy/scripts/supernode.sh"
    for script in targets.values():
        assert (DEPLOY / "scripts" / Path(script).name).exists()
    exposed = set(re.findall(r"EXPOSE ([\d ]+)", text)[0].split())
    defaults = (DEPLOY / "scripts" / "superlink.sh").read_text()
    assert (
        {"9092", "9093"} <= exposed
        and "0.0.0.0:9092" in defaults
        and "CONTROL_PORT:-9093" in defaults
    )


def test_compose_services_match_script_arguments():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert services["superlink"]["build"]["target"] == "superlink"
    nodes = {name: s for name, s in services.items() if name.startswith("supernode-")}
    assert len(nodes) == 3
    partitions = set()
    for s in nodes.values():
        assert s["build"]["target"] == "supernode"
        fleet, ca, key, partition, *data = s[
            "command"
        ]  # supernode.sh FLEET CA KEY PARTITION [DATA_DIR]
        assert fleet == "superlink:9092" and len(data) <= 1 and partition.isdigit()
        mounted = {v.split(":")[1] for v in s["volumes"]}
        assert ca in mounted and key in mounted
        partitions.add(partition)
    assert partitions == {"0", "1", "2"}
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["superlink:9100"]
    assert "9100:9100" in services["superlink"]["ports"]
