"""A planner stand-in for tests/test_process.py: starts the fake server, prints its pids, waits for a signal."""

import json

import psutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from planner import process  # noqa: E402

port, log_path = process.free_port(), Path(sys.argv[1])
url = f"http://127.0.0.1:{port}"
spec = process.LaunchSpec(argv=(sys.executable, str(Path(__file__).with_name("fake_server.py")), "serve", str(port),
                                "0.1"), env={}, log_path=log_path, health_url=url + "/health",
                          models_url=url + "/v1/models", ready_timeout_s=30)
with process.Server(spec, rules=()) as server, process.install_signal_handlers(server, grace_s=0.3):
    server.wait_ready(progress=False)
    kids = [c.pid for c in psutil.Process(server.pid).children(recursive=True)]
    print(json.dumps([server.pid, *kids]), flush=True)
    time.sleep(60)
