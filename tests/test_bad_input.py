"""Property-based bad input: whatever configs and command lines are thrown at fedkt, the
answer is either success or one line on stderr naming the problem with a non-zero exit,
never a traceback. Runs the CLI in-process with ``--check`` so valid inputs validate
instead of starting experiments."""

import os
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedkt.cli import EXIT_USER_ERROR
from fedkt.config import ExperimentConfig
from fedkt.server.cli import main

SETTINGS = settings(
    max_examples=int(os.environ.get("FEDKT_HYPOTHESIS_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _field_paths(model, prefix=""):
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _field_paths(ann, f"{prefix}{name}.")
        out.append(f"{prefix}{name}")
    return out


FIELDS = _field_paths(ExperimentConfig)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(string.ascii_lowercase, min_size=1, max_size=6), inner, max_size=3
        )
    ),
    max_leaves=6,
)
KEYS = st.one_of(
    st.sampled_from(FIELDS), st.text(string.ascii_letters + "._", min_size=1, max_size=15)
)


def _outcome(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code != 0:
        assert code == EXIT_USER_ERROR, (argv, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0], (argv, err)
    return code, err


@SETTINGS
@given(pairs=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=4))
def test_random_overrides_give_success_or_one_line(capsys, pairs):
    argv = ["run", "--check"]
    for key, value in pairs:
        argv += [
            "--set",
            f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}",  # noqa: E501
        ]
    _outcome(capsys, argv)


@SETTINGS
@given(doc=st.dictionaries(KEYS, VALUES, max_size=5) | VALUES)
def test_random_yaml_documents_give_success_or_one_line(capsys, tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    _outcome(capsys, ["run", "--check", str(path)])


@SETTINGS
@given(text=st.text(max_size=200))
def test_random_file_bytes_give_success_or_one_line(capsys, tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text)
    _outcome(capsys, ["run", "--check", str(path)])
    _outcome(capsys, ["compare", "--check", str(path)])


@SETTINGS
@given(data=st.binary(max_size=200))
def test_random_binary_files_give_success_or_one_line(capsys, tmp_path_factory, data):
    """Bytes that are not UTF-8 (an image passed by mistake) are a one-line error too."""
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(data)
    _outcome(capsys, ["run", "--check", str(path)])
    _outcome(capsys, ["compare", "--check", str(path)])


def test_a_binary_config_names_the_file_and_the_byte(capsys, tmp_path):
    path = tmp_path / "photo.yaml"
    path.write_bytes(b"rounds: 3\n\xff\xd8\xff\xe0")
    code, err = _outcome(capsys, ["run", "--check", str(path)])
    assert code == EXIT_USER_ERROR
    assert f"{path}: not a YAML text file (byte 0xff at offset 10 is not UTF-8)" in err


TOKENS = st.sampled_from(
    [
        "run",
        "compare",
        "data",
        "list",
        "fetch",
        "strategies",
        "--set",
        "--out",
        "--check",
        "--quiet",
        "rounds=2",
        "nope",
        "-x",
        "--data-dir",
        "imagenet",
        "=",
        "a.b=",
        "",
    ]
)


@SETTINGS
@given(argv=st.lists(TOKENS | st.text(string.printable, max_size=8), max_size=6))
def test_random_command_lines_give_success_or_one_line(capsys, argv):
    # Never start real work: experiments and comparisons only validate, fetches get no real name.
    if argv and argv[0] in ("run", "compare"):
        argv = [argv[0], "--check", *argv[1:]]
    if "fetch" in argv:
        argv = [a for a in argv if a not in ("mnist", "fashion_mnist", "cifar10", "digits")]
    code, _ = _outcome(capsys, argv)
    assert code in (0, EXIT_USER_ERROR)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["run", "--check", "--set", "faults.crash=2"],
            "faults.crash: Input should be less than or equal to 1",
        ),
        (
            ["run", "--check", "--set", "rounds=99999999999999999999999"],
            "rounds: Input should be less than or equal to 1000000",
        ),
        (["run", "--check", "--set", "train.lr=nan"], "train.lr: Input should be a finite number"),
        (
            ["run", "--check", "--set", "round_timeout=1e12"],
            "round_timeout: Input should be less than or equal to 604800",
        ),
        (["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_examples_of_one_line_errors(capsys, argv, needle):
    code, err = _outcome(capsys, argv)
    assert code == EXIT_USER_ERROR and needle in err


# ---------------------------------------------------------------- results files read back


def test_a_corrupt_comparison_plan_is_one_line(capsys, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_bytes(b'{"compare": {"name": ')  # cut short by a full disk
    code = main(["compare", "--out", str(out), "--set", "rounds=1", "--jobs", "1"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"fedkt: error: {out / 'compare.json'}: not valid JSON (Expecting value, line 1)"
    )


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("summary.json", b"\xff\xfe garbage", "(byte 0xff at offset 0 is not UTF-8)"),
        ("summary.json", b"[1, 2", "not valid JSON"),
        ("metrics.jsonl", b'{"round": 1, "client": 0, "accuracy": 0.5}\n[]\n', "line 2: not a"),
        ("metrics.jsonl", b'{"client": 0}\n', "results not as fedkt writes them"),
        ("fusion_weights.jsonl", b'{"round": 1}\n', "not fedkt's fusion weights"),
    ],
)
def test_a_cell_whose_files_are_not_fedkts_is_one_line(tmp_path, name, content, needle):
    from fedkt.errors import ResultsError
    from fedkt.report import CellResult

    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "summary.json").write_text('{"alma": 0.5, "num_clients": 1}')
    (cell / "metrics.jsonl").write_text('{"round": 1, "client": 0, "accuracy": 0.5}\n')
    (cell / name).write_bytes(content)
    with pytest.raises(ResultsError) as caught:
        CellResult.load(cell, "s", "p", 0, 10)
    message = str(caught.value)
    assert needle in message and str(cell) in message and "\n" not in message


@pytest.mark.parametrize(
    "line", ['{"round": 1, "alma": "high"}', '{"round": 1, "rejected_reasons": [1]}']
)
def test_resuming_over_rounds_that_are_not_fedkts_is_one_line(tmp_path, line):
    from fedkt.config import load_config
    from fedkt.errors import ResultsError
    from fedkt.experiment import resolve
    from fedkt.results import ResultsWriter

    exp = resolve(load_config(None, ["num_clients=2", "rounds=3"]))
    (tmp_path / "rounds.jsonl").write_text(line + "\n")
    with pytest.raises(ResultsError, match="rounds.jsonl: not fedkt's rounds"):
        ResultsWriter(tmp_path, exp, resume_round=1, plots=False)


def test_a_tuning_summary_without_a_numeric_alma_names_its_file(tmp_path):
    """A trial's summary.json edited by hand is refused with the file's name, not a TypeError."""
    from fedkt.compare import _alma
    from fedkt.errors import ResultsError

    path = tmp_path / "summary.json"
    path.write_text('{"alma": "0.9"}')
    with pytest.raises(ResultsError) as info:
        _alma(path)
    assert str(info.value) == f"{path}: no numeric alma ('0.9')"
    path.write_text('{"alma": 0.9}')
    assert _alma(path) == 0.9
