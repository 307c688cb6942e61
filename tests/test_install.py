"""`python -m planner` works from a plain (non-editable) install, away from the source tree: conf/ ships as package
data and Hydra finds it with pkg://conf."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_plain_install_plans_from_another_directory(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    assert (target / "conf" / "config.yaml").is_file() and (target / "conf" / "rules" / "targets.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", "import planner, sys; print(planner.__file__)"], cwd=work, env=env,
                         capture_output=True, text=True)
    assert out.stdout.strip().startswith(str(target)), out.stdout  # the installed copy, not the checkout
    run = subprocess.run([sys.executable, "-m", "planner", "model=llama3-70b", "hw=h100x4", "format=json"], cwd=work,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["plan"]["tensor_parallel"] >= 2
    assert (work / "plans" / "llama3-70b-h100x4-balanced.yaml").is_file()
