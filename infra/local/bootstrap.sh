#!/usr/bin/env bash
# Set up ./.venv for this checkout: idempotent, quiet, fails loudly.
#   bash infra/local/bootstrap.sh                  # CPU torch (small download)
#   ASIT_TORCH=cuda bash infra/local/bootstrap.sh  # the default (CUDA) torch build, for GPU machines
# Variables: PYTHON (interpreter, default python3), ASIT_TORCH (cpu|cuda), ASIT_TORCH_VERSION,
# ASIT_TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu where the default index only
# has CUDA builds). Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"
torch_kind="${ASIT_TORCH:-cpu}"
torch_version="${ASIT_TORCH_VERSION:-2.13.0}"

case "$torch_kind" in
  cpu|cuda) ;;
  *) echo "bootstrap: ASIT_TORCH must be cpu or cuda, got '$torch_kind'" >&2; exit 2 ;;
esac

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "bootstrap: $python is $("$python" -V 2>&1); asit needs Python >= 3.10 (set PYTHON=...)" >&2
  exit 2
}

if [[ ! -x "$venv/bin/python" ]]; then
  echo "bootstrap: creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
export PIP_NO_INPUT=1  # never wait for a prompt (CI has no stdin)

stamp="$venv/.asit-bootstrap"
want="$("$venv/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$repo/pyproject.toml") torch=$torch_kind"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/asit" ]]; then
  exit 0  # already set up for this pyproject.toml
fi

# torch first: a bare `pip install torch` (or letting the package pull it in) fetches the multi-GB
# CUDA build; with torch already present, `pip install -e .` leaves it alone. To switch between
# the CPU and CUDA builds, delete .venv and run this again.
if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  echo "bootstrap: installing torch ($torch_kind)"
  if [[ "$torch_kind" == cuda ]]; then
    "${pip[@]}" install torch
  else
    "${pip[@]}" install "torch==$torch_version" ${ASIT_TORCH_INDEX_URL:+--index-url "$ASIT_TORCH_INDEX_URL"}
  fi
fi

echo "bootstrap: installing asit and its dependencies"
"${pip[@]}" install -e "$repo[test]"
echo "$want" > "$stamp"
