#!/usr/bin/env bash
# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment
# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.
set -euo pipefail
cd "$(dirname "$0")"
docker run --rm --gpus all --ipc=host --shm-size=16g -p 8080:8080 -e HF_TOKEN -e PREFIX_CACHING=0 -e PREFILL_CHUNKING=1 -v "$HOME/.cache/huggingface":/root/.cache/huggingface ghcr.io/huggingface/text-generation-inference:3.3.7 --model-id meta-llama/Meta-Llama-3-70B-Instruct --num-shard 4 --dtype bfloat16 --max-total-tokens 1280 --max-input-tokens 1279 --max-batch-size 128 --max-concurrent-requests 128 --max-batch-prefill-tokens 8192 --cuda-memory-fraction 0.92 --hostname 0.0.0.0 --port 8080
