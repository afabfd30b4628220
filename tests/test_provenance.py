"""What a run's numbers depend on besides its config: the code, and the kernels the
arithmetic ran on (the same seed gives the same bits on one kind of machine only)."""

from __future__ import annotations

import json

import pytest

from fedkt import provenance
from fedkt.provenance import kernel_identity, run_device


@pytest.fixture(autouse=True)
def fresh_identity():
    kernel_identity.cache_clear()
    yield
    kernel_identity.cache_clear()


def test_the_cpus_vendor_and_dispatch_features_are_read_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k),
    )
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9654\nflags\t\t: fpu sse2 avx avx2 fma avx512f sha_ni\n\n"
        "processor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n"
    )
    assert provenance._cpu() == (
        "AuthenticAMD family=25 model=17",
        ["avx", "avx2", "fma", "avx512f"],
    )
    cpuinfo.write_text(  # aarch64 (a Neoverse N1): implementer and part, "Features"
        "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes crc32\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd0c\n"
    )
    assert provenance._cpu() == ("0x41 part=0xd0c", ["asimd"])
    monkeypatch.setattr(
        "builtins.open", lambda path, *a, **k: (_ for _ in ()).throw(FileNotFoundError(path))
    )
    monkeypatch.setattr(provenance.platform, "processor", lambda: "arm")  # macOS
    assert provenance._cpu() == ("arm", [])


def test_the_identity_changes_with_what_makes_other_kernels_run(monkeypatch):
    for name in provenance.KERNEL_ENV:
        monkeypatch.delenv(name, raising=False)
    here = kernel_identity()
    assert kernel_identity() is here  # cached
    monkeypatch.setattr(provenance, "_cpu", lambda: ("AuthenticAMD", ["avx2", "fma"]))
    kernel_identity.cache_clear()
    amd = kernel_identity()
    assert amd.split()[1] == "AuthenticAMD" and amd.endswith(" avx2 fma") and amd != here
    kernel_identity.cache_clear()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # PyTorch told to use its plain kernels
    assert kernel_identity() == f"{amd} ATEN_CPU_CAPABILITY=default"
    assert kernel_identity("cuda").startswith(kernel_identity() + " gpu=")


def test_run_device_never_raises_and_follows_auto():
    import torch

    assert run_device("cpu") == "cpu"
    assert run_device("cuda") == "cuda"  # even without a GPU here: it is a cuda run
    assert run_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_run_records_its_kernels_and_the_code_as_it_started(tmp_path, monkeypatch):
    """The digest is taken when the run starts: sources edited while it goes (seen: a
    20-round benchmark's summary named code written during its run) are not credited."""
    from fedkt.config import load_config
    from fedkt.experiment import resolve
    from fedkt.results import ResultsWriter
    from fedkt.rounds import RoundRecord

    cfg = load_config(None, ["num_clients=2", "rounds=1"])
    started = provenance.code_digest()
    writer = ResultsWriter(tmp_path, resolve(cfg))
    monkeypatch.setattr(provenance, "code_digest", lambda plugins=(): "edited meanwhile")
    writer.add_round(RoundRecord(round=1), [{"client": 0, "accuracy": 0.5}], None)
    writer.finish(1.0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kernels"] == kernel_identity("cpu")
    assert summary["code"] == started


def test_a_run_resumed_on_other_kernels_says_so_and_is_never_reused_as_either(
    tmp_path, monkeypatch
):
    """Rounds 1-2 on one kind of machine, 3-4 on another (a killed run continued
    elsewhere): the summary names both, by first round, so --reuse matches neither kind
    and the report counts it as a kind of its own. Resumed on the same kind, nothing shows."""
    from fedkt.config import load_config
    from fedkt.errors import ResultsError
    from fedkt.experiment import resolve
    from fedkt.results import KERNELS_FILE, ResultsWriter
    from fedkt.rounds import RoundRecord

    exp = resolve(load_config(None, ["num_clients=2", "rounds=4"]))
    here = kernel_identity("cpu")

    def rounds(writer, first, last):
        for r in range(first, last + 1):
            writer.add_round(RoundRecord(round=r), [{"client": 0, "accuracy": 0.5}], None)

    same, moved = tmp_path / "same", tmp_path / "moved"
    for run in (same, moved):
        rounds(ResultsWriter(run, exp), 1, 3)  # killed after round 3, round 3 not checkpointed
    resumed = ResultsWriter(same, exp, resume_round=2)
    rounds(resumed, 3, 4)
    assert resumed.finish(1.0)["kernels"] == here

    monkeypatch.setattr(provenance, "kernel_identity", lambda device="cpu": "other kind")
    resumed = ResultsWriter(moved, exp, resume_round=2)
    rounds(resumed, 3, 4)
    summary = resumed.finish(1.0)
    assert summary["kernels"] == f"{here} (from round 1) | other kind (from round 3)"
    assert json.loads((moved / "summary.json").read_text())["kernels"] == summary["kernels"]
    assert [r.round for r in resumed.rounds] == [1, 2, 3, 4]

    # resumed again at round 2 on the first kind: the second kind's span is dropped
    monkeypatch.setattr(provenance, "kernel_identity", kernel_identity)
    assert ResultsWriter(moved, exp, resume_round=2).provenance["kernels"] == here

    (moved / KERNELS_FILE).write_text('{"not": "spans"}')
    with pytest.raises(ResultsError, match="kernels.json: not fedkt's kernel spans"):
        ResultsWriter(moved, exp, resume_round=2)
    (moved / KERNELS_FILE).unlink()  # a run begun before spans were kept
    assert ResultsWriter(moved, exp, resume_round=2).provenance["kernels"] == (
        f"not recorded (from round 1) | {here} (from round 3)"
    )


def test_clients_on_other_kernels_are_named_in_the_summary(tmp_path):
    """In a deployment or on a Ray cluster the clients compute elsewhere: what they said
    in their handshake joins the summary when it differs from this machine's, so such a
    run never stands in for a local one (whose clients all compute here)."""
    from fedkt.config import load_config
    from fedkt.experiment import resolve
    from fedkt.results import ResultsWriter
    from fedkt.rounds import RoundRecord

    exp = resolve(load_config(None, ["num_clients=3", "rounds=1"]))
    here = kernel_identity("cpu")
    for clients, expected in (
        ({0: here, 1: here, 2: here}, here),
        (
            {0: here, 1: "gpu box", 2: "not recorded"},
            f"{here} | clients: gpu box (1 of 3 clients) | not recorded (1 of 3 clients)",
        ),
    ):
        writer = ResultsWriter(tmp_path / str(len(expected)), exp)
        writer.clients_computed_on(clients)
        writer.add_round(RoundRecord(round=1), [{"client": 0, "accuracy": 0.5}], None)
        assert writer.finish(1.0)["kernels"] == expected


def test_a_run_resumed_after_its_last_round_keeps_the_kernels_that_computed_it(
    tmp_path, monkeypatch
):
    """Stopped after the last round's checkpoint, before its summary, then resumed on
    another kind of machine, which computes nothing: the run is the first kind's."""
    from fedkt.config import load_config
    from fedkt.experiment import resolve
    from fedkt.results import ResultsWriter
    from fedkt.rounds import RoundRecord

    exp = resolve(load_config(None, ["num_clients=2", "rounds=2"]))
    here = kernel_identity("cpu")
    writer = ResultsWriter(tmp_path, exp)
    for r in (1, 2):
        writer.add_round(RoundRecord(round=r), [{"client": 0, "accuracy": 0.5}], None)
    monkeypatch.setattr(provenance, "kernel_identity", lambda device="cpu": "other kind")
    assert ResultsWriter(tmp_path, exp, resume_round=2).finish(1.0)["kernels"] == here
