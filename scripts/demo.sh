#!/usr/bin/env bash
# The main job, end to end, on the embedded default (an OCI image-layout directory):
# make a small model, package and push it, inspect it, pull it back and compare.
# Everything goes under ./demo-out (removed and recreated on each run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
OUT="${DEMO_OUT:-$ROOT/demo-out}"
rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
export MODELSEAL_CACHE_DIR="$OUT/cache"
STORE="oci:$OUT/store"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a small model (made by the demo itself)"
python - <<'PY'
import json, os, struct
os.makedirs("model", exist_ok=True)
# a real safetensors file: 8-byte header length, JSON header, raw little-endian float32 data
data = b"".join(struct.pack("<f", i / 100) for i in range(4096))
header = json.dumps({"dense.weight": {"dtype": "F32", "shape": [64, 64],
                                      "data_offsets": [0, len(data)]}}).encode()
with open("model/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + data)
json.dump({"architectures": ["TinyMLP"], "hidden_size": 64}, open("model/config.json", "w"))
json.dump({"version": "1.0", "model": {"vocab": {"a": 0, "b": 1}}}, open("model/tokenizer.json", "w"))
open("model/README.md", "w").write("---\nlicense: apache-2.0\npipeline_tag: text-classification\n---\n# tiny-mlp\nA demo model.\n")
os.makedirs("model/src", exist_ok=True)
open("model/src/train.py", "w").write("print('training')\n")
PY
find model -type f | sort

step "2. push it to $STORE:v1"
modelseal push model "$STORE:v1" --name tiny-mlp --version 1.0.0 --architecture mlp --format safetensors

step "3. push again: unchanged content is a no-op"
modelseal push model "$STORE:v1" --name tiny-mlp --version 1.0.0 --architecture mlp --format safetensors

step "4. change a file and push to the same tag: refused (tags never move silently)"
cp -r model model-changed; echo "changed" >> model-changed/README.md
if modelseal push model-changed "$STORE:v1" --name tiny-mlp --version 1.0.0 --architecture mlp --format safetensors; then
  echo "UNEXPECTED: retag was accepted"; exit 1
else
  echo "(refused as expected, exit code $?)"
fi

step "5. inspect"
modelseal inspect "$STORE:v1"

step "6. pull it back and compare byte for byte"
modelseal pull "$STORE:v1" pulled
diff -r model pulled && echo "pulled copy is identical to the original"

printf '\ndemo finished: everything is in %s\n' "$OUT"
