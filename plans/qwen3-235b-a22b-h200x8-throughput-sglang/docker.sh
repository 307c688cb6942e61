#!/usr/bin/env bash
# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment
# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.
set -euo pipefail
cd "$(dirname "$0")"
docker run --rm --gpus all --ipc=host --shm-size=16g -p 30000:30000 -e HF_TOKEN -v "$HOME/.cache/huggingface":/root/.cache/huggingface lmsysorg/sglang:v0.5.20 python3 -m sglang.launch_server --model-path Qwen/Qwen3-235B-A22B --tp-size 4 --pp-size 1 --dp-size 4 --enable-dp-attention --ep-size 4 --dtype bfloat16 --quantization fp8 --kv-cache-dtype fp8_e4m3 --context-length 1280 --max-running-requests 2048 --max-prefill-tokens 4096 --chunked-prefill-size 16384 --mem-fraction-static 0.897 --disable-radix-cache --host 0.0.0.0 --port 30000 --enable-metrics
