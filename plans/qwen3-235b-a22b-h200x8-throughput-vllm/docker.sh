#!/usr/bin/env bash
# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment
# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.
set -euo pipefail
cd "$(dirname "$0")"
docker run --rm --gpus all --ipc=host --shm-size=16g -p 8000:8000 -e HF_TOKEN -v "$HOME/.cache/huggingface":/root/.cache/huggingface vllm/vllm-openai:v0.32.0 Qwen/Qwen3-235B-A22B --tensor-parallel-size 1 --pipeline-parallel-size 1 --data-parallel-size 4 --enable-expert-parallel --dtype bfloat16 --quantization fp8 --kv-cache-dtype fp8 --max-model-len 1280 --max-num-seqs 512 --max-num-batched-tokens 4096 --gpu-memory-utilization 0.92 --no-enable-prefix-caching --enable-chunked-prefill --host 0.0.0.0 --port 8000
