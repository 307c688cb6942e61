"""A planner stand-in for tests/test_process.py: starts the fake server, prints its pids, waits for a signal.

`driver.py LOG` uses process.install_signal_handlers directly; `driver.py LOG --via-main` runs the same inside
planner.app.main (as `action=launch` does), so the exit code is the one the CLI reports.
"""

import json

import psutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from planner import app, process  # noqa: E402


def serve_until_signalled(log_path: Path) -> app.Outcome:
    port = process.free_port()
    url = f"http://127.0.0.1:{port}"
    spec = process.LaunchSpec(argv=(sys.executable, str(Path(__file__).with_name("fake_server.py")), "serve",
                                    str(port), "0.1"), env={}, log_path=log_path, health_url=url + "/health",
                              models_url=url + "/v1/models", ready_timeout_s=30)
    with process.Server(spec, rules=()) as server, process.install_signal_handlers(server, grace_s=0.3):
        server.wait_ready(progress=False)
        kids = [c.pid for c in psutil.Process(server.pid).children(recursive=True)]
        print(json.dumps([server.pid, *kids]), flush=True)
        time.sleep(60)
    return app.Outcome(0)


if __name__ == "__main__":
    log = Path(sys.argv[1])
    if "--via-main" in sys.argv:
        app.run = lambda overrides: serve_until_signalled(log)
        sys.exit(app.main([]))
    serve_until_signalled(log)
