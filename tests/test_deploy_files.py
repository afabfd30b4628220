"""The Docker and compose files cannot be built here (no Docker): check that they stay
consistent with the deployment scripts the loopback integration test runs. And the
scripts' own checks of the files they are given."""

import os
import re
import subprocess
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


def _script(name: str, *args: object, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLWR_HOME": str(home), "WARM_CLIENTAPP": "0"}
    return subprocess.run(
        [str(DEPLOY / "scripts" / name), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_garbled_certificates_and_keys_are_one_line_errors_naming_the_file(tmp_path):
    """A deploy script given a certificate that is not one (or a key that does not match
    it) stops before Flower starts, with one line naming the file; gRPC would report a
    garbled CA file as a refused connection after a page of C-core log lines."""
    certs = tmp_path / "certs"
    assert _script("make-certs.sh", certs, "127.0.0.1", home=tmp_path).returncode == 0
    junk = tmp_path / "junk.crt"
    junk.write_bytes(bytes(range(256)))
    other = tmp_path / "other"
    assert _script("make-certs.sh", other, "127.0.0.1", home=tmp_path).returncode == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, source in (("ca.crt", certs), ("server.crt", certs), ("server.key", other)):
        (mixed / name).write_bytes((source / name).read_bytes())
    cases = [
        (("supernode.sh", "127.0.0.1:9", junk, certs / "server.key", 0), str(junk)),
        (("connection.sh", "x", "127.0.0.1:9", junk), str(junk)),
        (("superlink.sh", mixed), f"{mixed}/server.crt / {mixed}/server.key"),
    ]
    for args, names in cases:
        done = _script(*args, home=tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stdout + done.stderr
        assert names in lines[0] and "not a usable PEM certificate" in lines[0], lines[0]
    # the files make-certs.sh wrote pass the same check
    check = f'source {DEPLOY}/scripts/env.sh; check_cert CA {certs}/ca.crt && ' + (
        f"check_cert server {certs}/server.crt {certs}/server.key"
    )
    assert subprocess.run(["bash", "-c", check]).returncode == 0
