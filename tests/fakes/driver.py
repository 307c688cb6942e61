"""A planner stand-in for tests/test_process.py: starts the fake server, prints its pids, waits for a signal.

`driver.py LOG` uses process.install_signal_handlers directly; `driver.py LOG --via-main` runs the same inside
planner.app.main (as `action=launch` does), so the exit code is the one the CLI reports; `--load-test` then runs
a long load test against tests/stub_server.py (as `action=verify` does) and waits there for the signal.
"""

import json
import threading

import psutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner import app, process  # noqa: E402


def serve_until_signalled(log_path: Path, load_test: bool = False) -> app.Outcome:
    port = process.free_port()
    url = f"http://127.0.0.1:{port}"
    spec = process.LaunchSpec(argv=(sys.executable, str(Path(__file__).with_name("fake_server.py")), "serve",
                                    str(port), "0.1"), env={}, log_path=log_path, health_url=url + "/health",
                              models_url=url + "/v1/models", ready_timeout_s=30)
    with process.Server(spec, rules=()) as server, process.install_signal_handlers(server, grace_s=0.3):
        server.wait_ready(progress=False)
        kids = [c.pid for c in psutil.Process(server.pid).children(recursive=True)]
        if not load_test:
            print(json.dumps([server.pid, *kids]), flush=True)
            time.sleep(60)
        else:
            from stub_server import StubConfig, running

            from planner import loadgen

            with running(StubConfig(token_delay_ms=200)) as (url, stub):
                spec = loadgen.LoadSpec(base_url=url, model="stub", input_len=8, output_len=300, num_prompts=4,
                                        max_concurrency=1, warmup=0, scrape_metrics_every_s=0.05)
                threading.Timer(0.5, lambda: print(json.dumps([server.pid, *kids]), flush=True)).start()
                loadgen.run_sync(spec)
    return app.Outcome(0)


if __name__ == "__main__":
    log = Path(sys.argv[1])
    if "--via-main" in sys.argv:
        app.run = lambda overrides: serve_until_signalled(log, load_test="--load-test" in sys.argv)
        sys.exit(app.main([]))
    serve_until_signalled(log)
