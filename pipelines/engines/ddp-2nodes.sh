#!/usr/bin/env bash
# One point trained as 2 nodes x 1 process on this machine: two torchrun agents, node ranks 0 and
# 1, meet at 127.0.0.1:$DDP_PORT and start one rank each; DDP over gloo. On two machines, run the
# same torchrun command on each with its --node-rank and MASTER_ADDR the first one's address.
#
#   pipelines/engines/ddp-2nodes.sh [OVERRIDES...]      # e.g. batch_size=8 model.dropout=0.0
#
# The point is one MLflow run: rank zero decides and logs, and hands its decision to the other
# node's rank through the agents' store (hybridsweep.tracking.share_decision).
set -euo pipefail
PYTHON="${PYTHON:-python}"
PORT="${DDP_PORT:-29517}"
run() {
    "$PYTHON" -m torch.distributed.run --nnodes=2 --nproc-per-node=1 --node-rank="$1" \
        --master-addr=127.0.0.1 --master-port="$PORT" \
        -m hybridsweep.train trainer=ddp_cpu trainer.devices=1 ++trainer.num_nodes=2 "${@:2}"
}
run 1 "$@" &
other=$!
status=0
run 0 "$@" || status=$?
wait "$other" || status=$?
exit "$status"
