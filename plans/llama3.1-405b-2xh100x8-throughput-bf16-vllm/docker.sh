#!/usr/bin/env bash
# Rendered by the planner from the plan beside this folder. HF_TOKEN is read from your environment
# (`docker run -e HF_TOKEN` copies it by name); config files are mounted from this folder.
set -euo pipefail
cd "$(dirname "$0")"
# 2 nodes per replica, following kubernetes-sigs/lws docs/examples/vllm/GPU/lws.yaml. On each node:
#   LEADER_ADDRESS=<node 0's address> ./docker.sh leader                  (node 0)
#   LEADER_ADDRESS=<node 0's address> NODE_RANK=<1..1> ./docker.sh worker
case "${1:?leader or worker}" in
  leader) NODE_RANK=0 docker run --rm --gpus all --ipc=host --shm-size=16g --network=host -e LEADER_ADDRESS -e NODE_RANK -e HF_TOKEN -v "$HOME/.cache/huggingface":/root/.cache/huggingface vllm/vllm-openai:v0.32.0 sh -c 'ray start --head --port=6379 && until ray status 2>/dev/null | grep -q '"'"'/16.0 GPU'"'"'; do sleep 5; done && exec vllm serve meta-llama/Meta-Llama-3.1-405B-Instruct --tensor-parallel-size 8 --pipeline-parallel-size 2 --data-parallel-size 1 --no-enable-expert-parallel --distributed-executor-backend ray --dtype bfloat16 --kv-cache-dtype fp8 --max-model-len 1280 --max-num-seqs 256 --max-num-batched-tokens 16384 --gpu-memory-utilization 0.92 --no-enable-prefix-caching --enable-chunked-prefill --host 0.0.0.0 --port 8000' ;;
  worker) docker run --rm --gpus all --ipc=host --shm-size=16g --network=host -e LEADER_ADDRESS -e NODE_RANK -e HF_TOKEN -v "$HOME/.cache/huggingface":/root/.cache/huggingface vllm/vllm-openai:v0.32.0 sh -c 'ray start --address=$LEADER_ADDRESS:6379 --block' ;;
esac
