"""How the CLI ends when the user ends it: Ctrl-C/SIGTERM during a launch (planner.app.main with the fake server
of tests/fakes) and a closed stdout pipe. Neither is an internal error (issue 22, item 1)."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

FAKES = Path(__file__).parent / "fakes"


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("sig, code, during", [
    pytest.param(signal.SIGINT, 130, (), id="ctrl-c-while-serving-exits-130"),
    pytest.param(signal.SIGTERM, 143, (), id="sigterm-while-serving-exits-143"),
    pytest.param(signal.SIGINT, 130, ("--load-test",), id="ctrl-c-during-the-load-test-exits-130"),
])
def test_signal_during_launch_through_main_exits_quietly_and_leaves_nothing(tmp_path, sig, code, during):
    """The signal arrives in the readiness wait, while serving, or inside the load generator's event loop."""
    driver = subprocess.Popen([sys.executable, str(FAKES / "driver.py"), str(tmp_path / "server.log"), "--via-main",
                               *during],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = json.loads(driver.stdout.readline())
        assert len(pids) == 3, "leader, the stubborn child, the setsid grandchild"
        driver.send_signal(sig)
        _, err = driver.communicate(timeout=20)
    finally:
        driver.kill()
    assert driver.returncode == code, err
    assert "internal error" not in err and "Traceback" not in err, err
    assert all(_gone(p) for p in pids), "the server's whole tree is down"


def test_closed_stdout_pipe_ends_quietly():
    """`python -m planner | head -1`: the reader leaves early; the planner must not call that a bug."""
    proc = subprocess.Popen([sys.executable, "-m", "planner", "save=false"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert proc.returncode in (0, 141), (proc.returncode, err)
    assert "internal error" not in err and "Traceback" not in err and "Exception ignored" not in err, err
