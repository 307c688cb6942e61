#!/usr/bin/env bash
# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment
# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.
set -euo pipefail
cd "$(dirname "$0")"
docker run --rm -p 8000:8000 -e HF_TOKEN -e VLLM_CPU_KVCACHE_SPACE=1 -v "$HOME/.cache/huggingface":/root/.cache/huggingface vllm/vllm-openai-cpu:v0.32.0 planner/tiny-llama --tensor-parallel-size 1 --pipeline-parallel-size 1 --data-parallel-size 1 --no-enable-expert-parallel --dtype bfloat16 --kv-cache-dtype bfloat16 --max-model-len 1280 --max-num-seqs 128 --max-num-batched-tokens 2048 --no-enable-prefix-caching --enable-chunked-prefill --host 0.0.0.0 --port 8000
