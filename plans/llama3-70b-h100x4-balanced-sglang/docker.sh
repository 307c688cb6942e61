#!/usr/bin/env bash
# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment
# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.
set -euo pipefail
cd "$(dirname "$0")"
docker run --rm --gpus all --ipc=host --shm-size=16g -p 30000:30000 -e HF_TOKEN -v "$HOME/.cache/huggingface":/root/.cache/huggingface lmsysorg/sglang:v0.5.20 python3 -m sglang.launch_server --model-path meta-llama/Meta-Llama-3-70B-Instruct --tp-size 4 --pp-size 1 --dp-size 1 --dtype bfloat16 --kv-cache-dtype bfloat16 --context-length 1280 --max-running-requests 128 --max-prefill-tokens 8192 --chunked-prefill-size 8192 --mem-fraction-static 0.819 --disable-radix-cache --host 0.0.0.0 --port 30000 --enable-metrics
