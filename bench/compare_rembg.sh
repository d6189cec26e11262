#!/usr/bin/env bash
# rembg's masks for a labelled set, to score beside ours with `matteflow eval --predictions`.
#
# rembg runs in its own venv (never a matteflow dependency) with `dis_custom` and the same
# IS-Net ONNX file our registry verifies, one image at a time through its Python API, as its
# users run it. Writes OUT/{id}.png (grey alpha) and OUT/timings.csv (id,seconds per image).
#
#   bench/compare_rembg.sh ../shared/data/eval-dev out/bench/rembg
#   .venv/bin/matteflow eval --data ../shared/data/eval-dev --output out/eval \
#       --predictions out/bench/rembg --name rembg
#
# Env: REMBG_VENV (default .venv-rembg), ONNX (default: isnet-general-use-fp16.onnx from the
# first folder of MATTEFLOW_MODEL_PATH), PYTHON (default python3.11).
set -euo pipefail
DATA=${1:?usage: bench/compare_rembg.sh DATA_DIR_OR_MANIFEST OUT_DIR}
OUT=${2:?usage: bench/compare_rembg.sh DATA_DIR_OR_MANIFEST OUT_DIR}
VENV=${REMBG_VENV:-.venv-rembg}
ONNX=${ONNX:-${MATTEFLOW_MODEL_PATH%%:*}/isnet-general-use-fp16.onnx}
[ -f "$ONNX" ] || { echo "no ONNX file at $ONNX (set ONNX or MATTEFLOW_MODEL_PATH)" >&2; exit 2; }
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3.11}" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "rembg[cpu]==2.0.86"
fi
mkdir -p "$OUT"
# rembg loads dis_custom models only from under $REMBG_HOME.
REMBG_HOME=$(mktemp -d)
trap 'rm -rf "$REMBG_HOME"' EXIT
cp "$ONNX" "$REMBG_HOME/"
export REMBG_HOME
# The labelled set as "id<TAB>image path", read by matteflow's own loader.
.venv/bin/python -c '
import sys
from matteflow.pipelines.evaluate import load_samples
for s in load_samples(sys.argv[1]):
    print(f"{s.id}\t{s.image_uri}")
' "$DATA" > "$OUT/samples.tsv"
"$VENV/bin/python" - "$OUT" "$REMBG_HOME/$(basename "$ONNX")" <<'PY'
import csv, sys, time
from pathlib import Path
from PIL import Image
from rembg import new_session, remove

out, model = Path(sys.argv[1]), sys.argv[2]
session = new_session("dis_custom", model_path=model)
rows = [line.rstrip("\n").split("\t") for line in (out / "samples.tsv").open()]
with (out / "timings.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "seconds"])
    for i, (sample_id, path) in enumerate(rows, 1):
        start = time.perf_counter()
        mask = remove(Image.open(path), session=session, only_mask=True)
        mask.save(out / f"{sample_id}.png")
        writer.writerow([sample_id, f"{time.perf_counter() - start:.4f}"])
        print(f"rembg {i}/{len(rows)} {sample_id}", flush=True)
PY
echo "rembg masks in $OUT; score them with matteflow eval --predictions $OUT --name rembg"
