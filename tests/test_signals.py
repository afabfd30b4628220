"""SIGTERM (a process manager's stop) is handled as Ctrl-C: the helpers, and a command
stopped by it. The full runs stopped by SIGTERM and resumed are in test_resume.py
(``fedkt run``), test_parallel.py (``fedkt compare``) and test_deploy.py (SuperNode)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from tiny import ROOT

from fedkt.signals import Terminated, describe, exit_status, handle_sigterm


def test_sigterm_raises_terminated_a_keyboard_interrupt():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        handle_sigterm()
        with pytest.raises(KeyboardInterrupt) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode; never reached
        assert isinstance(caught.value, Terminated)
        assert exit_status(caught.value) == 143 and describe(caught.value).startswith("terminated")
        ctrl_c = KeyboardInterrupt()
        assert exit_status(ctrl_c) == 130 and describe(ctrl_c) == "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_benchmark_stopped_ends_with_one_line_and_the_shell_status(how):
    code = (
        "import time\n"
        "from benchmarks.harness import command\n"
        "def main():\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "command(main, 'benchmarks.sleepy')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(how)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + how
    word = "terminated (SIGTERM)" if how == signal.SIGTERM else "interrupted"
    assert err.strip().splitlines() == [
        f"benchmarks.sleepy: {word}; the figures measured so far are above"
    ]


def test_ends_at_stop_holds_for_its_block_only():
    from fedkt.signals import ends_at_stop, process_ends_at_stop

    assert not process_ends_at_stop()
    with ends_at_stop():
        assert process_ends_at_stop()
        with ends_at_stop():
            assert process_ends_at_stop()
        assert process_ends_at_stop()
    assert not process_ends_at_stop()
    with pytest.raises(KeyboardInterrupt):  # a stop leaving the block ends it too
        with ends_at_stop():
            raise Terminated("SIGTERM")
    assert not process_ends_at_stop()


def test_two_stop_signals_at_once_end_the_wait_as_a_stop():
    """SIGTERM to a comparison's process group reaches each job twice: the signal itself,
    then the parent's SIGINT. The main thread's wait for the engine must end with the
    stop (a KeyboardInterrupt) every time, and be told when the engine ends. Waiting in
    ``Event.wait`` it raised "release unlocked lock" on all 60 tries of this test (the
    second signal lands in the wait's clean-up), and a stopped job then hung ~15 s."""
    import threading

    from fedkt.server.simulation import _run_with_interrupts_on_main_thread

    def terminate(signum, frame):
        raise Terminated("SIGTERM")

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    wrong = []
    try:
        for attempt in range(20):
            release, stop, done = threading.Event(), threading.Event(), threading.Event()

            def both_signals(delay=0.01 + attempt % 5 * 0.003):
                time.sleep(delay)
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)

            threading.Thread(target=both_signals, daemon=True).start()
            try:
                _run_with_interrupts_on_main_thread(release.wait, stop, done)
            except KeyboardInterrupt:
                pass
            except BaseException as exc:  # noqa: BLE001 - what this test looks for
                wrong.append(repr(exc))
            try:
                time.sleep(0.05)  # the second signal, if it has not landed yet
            except KeyboardInterrupt:
                pass
            assert not done.is_set()
            release.set()  # the engine ends: the event says so
            deadline = time.monotonic() + 5
            while not done.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert done.is_set()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert not wrong, wrong[:3]
