#!/usr/bin/env bash
# The main job on the embedded sample: set up, replay the sample bag live through the fusion
# node (real DDS, sim time), then evaluate it offline and write the report.
# Usage: bash scripts/demo.sh [OUT_DIR]   (default: out/demo, replaced on every run)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
# shellcheck disable=SC1091
. "$root/scripts/env.sh"
cd "$root"
out="${1:-$root/out/demo}"
rm -rf "$out"
mkdir -p "$out"
bag="$root/sample/tno_sample"

echo "[demo] 1/2 live: replaying $bag through the fusion node (3 loops, real DDS)"
tesg-replay "$bag" --out "$out/live" --loop 3
echo "[demo] 2/2 offline: deterministic evaluation with baselines and metrics"
tesg-eval "$bag" --out "$out/eval" --no-progress
echo
echo "[demo] live replay report: $out/live/replay_report.md"
echo "[demo] evaluation report:  $out/eval/report.html (and report.md)"
