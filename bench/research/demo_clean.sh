#!/usr/bin/env bash
# Re-score a finished demo run with clean success (issue 18): the layer sweeps of both organisms and the transfer
# at the run's chosen layers, on the run's own organisms and mappers, into a new run_dir (nothing retrained).
#   flock /work/coord/heavy.lock nice -n 15 bash bench/research/demo_clean.sh RUN_DIR OUT_DIR
set -euo pipefail
run="$1"; out="$2"
asit=.venv/bin/asit
layers=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['layers']; print(s['source']['chosen_layer'], s['target']['chosen_layer'])" "$run/summary.json")
read -r s_layer t_layer <<<"$layers"
for name in target source; do
  $asit layers configs/layers.yaml run_dir="$out" model.path="$run/models/$name" name="$name"
done
$asit transfer configs/transfer.yaml run_dir="$out" source.path="$run/models/source" target.path="$run/models/target" \
  source_layer="$s_layer" target_layer="$t_layer" mappers.autoencoder="$run/mappers/autoencoder" mappers.affine="$run/mappers/affine"
