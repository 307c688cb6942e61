"""Fake serving engines for tests/test_process.py: `fake_server.py MODE [PORT DELAY_S]`.

serve: after DELAY_S, answers /health and /v1/models on PORT (with FAKE_API_KEY set, /v1 paths answer 401 without
`Authorization: Bearer $FAKE_API_KEY`, as vLLM's AuthenticationMiddleware does); first spawns a child that ignores SIGINT and
SIGTERM, which spawns a grandchild that leaves the process group (setsid). oom: prints a CUDA OOM traceback, exits 1.
fatal: prints a fatal vLLM error and keeps running. hang: never becomes ready.
"""

import http.server
import json
import os
import signal
import subprocess
import sys
import time


def spawn(mode: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, __file__, mode], stdout=subprocess.PIPE)
    p.stdout.readline()  # it is set up (and has spawned its own child) once it says so
    return p


def serve(port: int, delay_s: float) -> None:
    print("INFO starting fake engine", flush=True)
    print(f"INFO token from env: HF_TOKEN={os.environ.get('HF_TOKEN', '')} MY_VAR={os.environ.get('MY_VAR', '')}",
          flush=True)
    spawn("stubborn")
    time.sleep(delay_s)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            key = os.environ.get("FAKE_API_KEY")
            if key and self.path.startswith("/v1") and self.headers.get("Authorization") != f"Bearer {key}":
                self.send_response(401)
                self.end_headers()
                self.wfile.write(b'{"error": "Unauthorized"}')
                return
            body = {"/health": b"", "/v1/models": json.dumps({"data": [{"id": "fake"}]}).encode()}.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, fmt, *args):
            print("INFO http " + fmt % args, flush=True)

    print(f"INFO serving on 127.0.0.1:{port}", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    mode = sys.argv[1]
    if mode == "serve":
        serve(int(sys.argv[2]), float(sys.argv[3]))
    elif mode == "stubborn":  # ignores the polite signals: only SIGKILL ends it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        spawn("escapee")
        print("ready", flush=True)
        while True:
            time.sleep(60)
    elif mode == "escapee":  # leaves the process group: only the remembered pid finds it
        os.setsid()
        print("ready", flush=True)
        while True:
            time.sleep(60)
    elif mode == "oom":
        print("INFO loading weights", flush=True)
        print("Traceback (most recent call last):\n  File \"worker.py\", line 1, in load\n"
              "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total capacity "
              "of 79.19 GiB of which 1.02 GiB is free.", flush=True)
        sys.exit(1)
    elif mode == "fatal":
        print("ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be "
              "stored in KV cache (23648).", flush=True)
        while True:
            time.sleep(60)
    elif mode == "hang":
        print("INFO loading weights forever", flush=True)
        while True:
            time.sleep(60)


if __name__ == "__main__":
    main()
