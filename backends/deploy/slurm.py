"""Slurm: one batch script (`sbatch serve.sbatch`) that serves one replica of the plan on its nodes.

- vLLM: one node runs `vllm serve`; several form a Ray cluster first (head on the first node, `ray start --block`
  on the others through srun, as ray-project/ray doc/source/cluster/doc_code/slurm-basic.sh does), then the head
  serves with --distributed-executor-backend ray.
- SGLang: every node runs `python3 -m sglang.launch_server` with --nnodes, --node-rank $SLURM_NODEID and
  --dist-init-addr <first node> (SGLang server_args.py: nnodes, node_rank, dist_init_addr).
- TensorRT-LLM: `srun --mpi=pmix` starts one task per GPU, `trtllm-llmapi-launch` joins them into one MPI world and
  rank 0 runs `trtllm-serve` (NVIDIA/TensorRT-LLM examples/llm-api/llm_mgmn_trtllm_serve.sh).
Each replica is one job: submit it `replicas` times (or as a job array) behind a load balancer.
"""

import shlex
from typing import Optional

import yaml

from backends.deploy.base import DeployTable, Deployment, EngineArgs, Placement, disaggregated_unsupported
from backends.deploy.base import engine_flags, engine_unsupported
from backends.deploy.base import gpus_per_node
from planner.plan import Plan
from planner.specs import BackendName, GpuSpec

FILE = "serve.sbatch"
EXTRA = "extra_llm_api_options.yaml"
RAY = "ray-project/ray doc/source/cluster/doc_code/slurm-basic.sh (20ec6cb)"
TRTLLM = "NVIDIA/TensorRT-LLM examples/llm-api/llm_mgmn_trtllm_serve.sh (b35ac1b)"
PORT = 8000
SERVE_PREFIX = "SERVE="  # the script's one line holding the engine command (checked by the no-drift test)


def _table(plan: Plan, gpu: GpuSpec) -> DeployTable:
    rows = (Placement("nodes", FILE, ("#SBATCH --nodes=",), lambda p: p.nodes, "sbatch --nodes"),
            Placement("gpus_per_replica", FILE, ("#SBATCH --gpus-per-node=",), lambda p: gpus_per_node(p),
                      "sbatch --gpus-per-node"))
    return DeployTable(plan.backend, EngineArgs(FILE, (SERVE_PREFIX,), (), "the script's SERVE line"), rows)


def _serve_words(plan: Plan) -> tuple[str, ...]:
    flags = engine_flags(plan).argv
    if plan.backend is BackendName.vllm:
        return ("vllm", "serve", plan.model_path, *flags, "--host", "0.0.0.0", "--port", str(PORT))
    if plan.backend is BackendName.sglang:
        return ("python3", "-m", "sglang.launch_server", "--model-path", plan.model_path, *flags,
                "--host", "0.0.0.0", "--port", str(PORT))
    return ("trtllm-llmapi-launch", "trtllm-serve", plan.model_path, *flags, "--backend", "pytorch",
            "--host", "0.0.0.0", "--port", str(PORT), "--extra_llm_api_options", f"$SLURM_SUBMIT_DIR/{EXTRA}")


def _launch(plan: Plan) -> list[str]:
    """The lines after SERVE=...: how the nodes start the engine."""
    per_node = gpus_per_node(plan)
    if plan.backend is BackendName.trtllm:
        return [f"srun --mpi=pmix --ntasks={plan.gpus_per_replica} --ntasks-per-node={per_node} $SERVE"]
    if plan.backend is BackendName.sglang:
        if plan.nodes == 1:
            return ["exec $SERVE"]
        return ['srun --ntasks-per-node=1 bash -c "$SERVE --nnodes $SLURM_NNODES --node-rank \\$SLURM_NODEID '
                '--dist-init-addr $HEAD_ADDR:20000"']
    if plan.nodes == 1:
        return ["exec $SERVE"]
    return ["srun --nodes=1 --ntasks=1 -w \"$HEAD\" ray start --head --port=6379 --block &",
            "sleep 10",
            f"srun --nodes={plan.nodes - 1} --ntasks={plan.nodes - 1} --exclude=\"$HEAD\" "
            "ray start --address=\"$HEAD_ADDR:6379\" --block &",
            f"until ray status --address=\"$HEAD_ADDR:6379\" 2>/dev/null | grep -q '/{plan.gpus_per_replica}.0 GPU'; "
            "do sleep 5; done",
            "srun --nodes=1 --ntasks=1 --overlap -w \"$HEAD\" bash -c \"RAY_ADDRESS=$HEAD_ADDR:6379 $SERVE\""]


class Slurm:
    name = "slurm"
    title = "Slurm batch script"
    engines = (BackendName.vllm, BackendName.sglang, BackendName.trtllm)

    def table(self, plan: Plan, gpu: GpuSpec) -> DeployTable:
        return _table(plan, gpu)

    def unsupported(self, plan: Plan, gpu: GpuSpec) -> Optional[str]:
        return engine_unsupported(self.name, self.engines, plan, f"{RAY}; {TRTLLM}") or \
            disaggregated_unsupported(self.name, plan, f"a script would start both pools and a router, not rendered "
                                                       f"here [source: this script renders one replica, {RAY}]")

    def render(self, plan: Plan, name: str, gpu: GpuSpec) -> Deployment:
        lines = ["#!/bin/bash",
                 f"# Rendered by the planner: one replica of {plan.model_path} ({plan.backend.value}); submit it "
                 f"{plan.replicas} time(s) behind a load balancer.",
                 f"#SBATCH --job-name={name}",
                 f"#SBATCH --nodes={plan.nodes}",
                 f"#SBATCH --gpus-per-node={gpus_per_node(plan)}",
                 "#SBATCH --exclusive",
                 "set -euo pipefail",
                 "# HF_TOKEN comes from your environment (sbatch exports it); never written here",
                 'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                 'HEAD_ADDR=$(srun --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | cut -d" " -f1)',
                 f"{SERVE_PREFIX}{shlex.quote(shlex.join(_serve_words(plan)))}",
                 *_launch(plan)]
        files = {FILE: "\n".join(lines) + "\n"}
        if plan.backend is BackendName.trtllm:
            files[EXTRA] = yaml.safe_dump(engine_flags(plan).config, sort_keys=True)
        notes = (f"deploy=slurm: `sbatch {FILE}` serves on port {PORT} of the first node ($HEAD).",)
        return Deployment(self.name, files, notes)


TARGET = Slurm()
