#!/usr/bin/env bash
# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment
# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.
set -euo pipefail
cd "$(dirname "$0")"
docker run --rm --gpus all --ipc=host --shm-size=16g -p 8000:8000 -e HF_TOKEN -v "$HOME/.cache/huggingface":/root/.cache/huggingface -v "$PWD/extra_llm_api_options.yaml":/etc/planner/extra_llm_api_options.yaml:ro nvcr.io/nvidia/tensorrt-llm/release:1.2.1 trtllm-serve Qwen/Qwen3-235B-A22B --tp_size 4 --pp_size 1 --ep_size 4 --max_seq_len 1280 --max_batch_size 512 --max_num_tokens 4096 --backend pytorch --host 0.0.0.0 --port 8000 --extra_llm_api_options /etc/planner/extra_llm_api_options.yaml
