#!/usr/bin/env bash
# The main job, end to end, on the embedded default (an OCI image-layout directory; no server
# to set up): run a small ML pipeline whose every step signs in-toto attestations (each
# signature countersigned by a local RFC 3161 time-stamp authority), scan the model for
# code-executing files, package and push it with its attestations, attach a signed ML-BOM,
# then: a signed layout and a deployer policy that requires the production stage; promotion
# by two release managers; verify; the model's history; a verified pull; the auditor's HTML
# report and offline bundle, restored into a second home and verified there; two tampered
# variants refused; the model retired and refused, also after its retirement is deleted.
# Everything goes under ./demo-out, or $DEMO_OUT (removed and recreated on each run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
OUT="${DEMO_OUT:-$ROOT/demo-out}"
rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
export MODELSEAL_CACHE_DIR="$OUT/cache"
export MODELSEAL_STATE="$OUT/state"   # what the verifier remembers (never ~/.local/state here)
STORE="oci:$OUT/store"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# expect_refusal CODE COMMAND...: COMMAND must fail with exactly CODE (docs/exit-codes.md);
# anything else (success, or failing for another reason) stops the demo
expect_refusal() {
  local want=$1 rc=0
  shift
  "$@" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "UNEXPECTED: exit code $rc, not $want, from: $*"; exit 1
  fi
  echo "(refused as expected, exit code $rc)"
}
START=$SECONDS

step "1. signing keys: the layout owner, one per pipeline role, three release managers"
mkdir -p keys
for who in owner alice bob carol dave erin frank grace heidi; do
  modelseal keygen "keys/$who" >/dev/null
done
ls keys

step "1b. a local RFC 3161 time-stamp authority (OpenSSL's ts, a throwaway CA) on 127.0.0.1"
python "$ROOT/scripts/local_tsa.py" "$OUT/tsa" --url-file "$OUT/tsa.url" >"$OUT/tsa.log" 2>&1 &
TSA_PID=$!
trap 'kill "$TSA_PID" 2>/dev/null || true; wait "$TSA_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$OUT/tsa.url" ] && break; sleep 0.1; done
[ -s "$OUT/tsa.url" ] || { echo "the local TSA did not start:"; cat "$OUT/tsa.log"; exit 1; }
# every signing command (run, attest, scan, push, bom, promote, retire) has its signature
# countersigned: --tsa URL, or this variable
export MODELSEAL_TSA="$(cat "$OUT/tsa.url")"
echo "TSA at $MODELSEAL_TSA; its CA certificate: tsa/ca.pem"

step "2. the pipeline's code (the demo writes a tiny one)"
mkdir -p code
cat > code/prepare_data.py <<'PY'
import csv, os, random
random.seed(7)
os.makedirs("data", exist_ok=True)
with open("data/train.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["x", "y"])
    for _ in range(256):
        x = random.random(); w.writerow([f"{x:.6f}", int(x > 0.5)])
print("wrote data/train.csv")
PY
cat > code/train.py <<'PY'
import csv, json, os, struct
rows = list(csv.DictReader(open("data/train.csv")))
w = sum(float(r["x"]) * (2 * int(r["y"]) - 1) for r in rows) / len(rows)
os.makedirs("model/src", exist_ok=True)
# a real safetensors file: 8-byte header length, JSON header, little-endian float32 data
data = b"".join(struct.pack("<f", w * (i % 7)) for i in range(4096))
header = json.dumps({"dense.weight": {"dtype": "F32", "shape": [64, 64],
                                      "data_offsets": [0, len(data)]}}).encode()
with open("model/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + data)
json.dump({"architectures": ["TinyMLP"], "hidden_size": 64}, open("model/config.json", "w"))
json.dump({"version": "1.0", "model": {"vocab": {"a": 0, "b": 1}}}, open("model/tokenizer.json", "w"))
open("model/README.md", "w").write("---\nlicense: apache-2.0\npipeline_tag: text-classification\n"
                                   "datasets: [demo-train]\n---\n# tiny-mlp\nA demo model.\n")
open("model/src/inference.py", "w").write("def predict(x):\n    return int(x > 0.5)\n")
print("trained model/, weight", round(w, 4))
PY
cat > code/evaluate.py <<'PY'
import csv, json, os
os.makedirs("eval", exist_ok=True)
rows = list(csv.DictReader(open("data/train.csv")))
acc = sum(int(float(r["x"]) > 0.5) == int(r["y"]) for r in rows) / len(rows)
json.dump({"accuracy": acc, "f1": acc, "slices": {"x<0.5": {"accuracy": acc}}}, open("eval/metrics.json", "w"))
print("accuracy", acc)
PY
ls code

step "3. prepare-data step (signed by alice)"
modelseal run --step prepare-data --signer keys/alice.key --materials code/prepare_data.py \
  --products data -- python code/prepare_data.py

step "4. train step (signed by bob) + SLSA training provenance"
modelseal run --step train --signer keys/bob.key --materials data --materials code/train.py \
  --products model -- python code/train.py
modelseal attest provenance --signer keys/bob.key --base-dir model --subject . \
  --dataset data/train.csv --param learning_rate=0.01 --param epochs=3 \
  --code-repo https://example.com/demo/tiny-mlp.git --code-commit 0123456789abcdef0123456789abcdef01234567

step "5. evaluate step (signed by carol) + test-result attestation with thresholds"
modelseal run --step evaluate --signer keys/carol.key --materials model --materials data \
  --products eval -- python code/evaluate.py
modelseal attest evaluation --signer keys/carol.key --metrics eval/metrics.json \
  --threshold 'accuracy>=0.9' --base-dir model --subject .

step "5b. approve step (signed by dave, who did not train the model)"
modelseal run --step approve --signer keys/dave.key --materials model --materials eval -- true
ls .modelseal/attestations

step "6. model-safety scan (signed by erin): no file of the model may run code when loaded"
modelseal scan model --signer keys/erin.key

step "7. package and push to $STORE:v1 (package step signed by erin), attaching every attestation"
modelseal push model "$STORE:v1" --name tiny-mlp --version 1.0.0 --architecture mlp --format safetensors \
  --signer keys/erin.key --attestations .modelseal/attestations

step "8. the attestations that travel with the model"
modelseal attestations "$STORE:v1"

step "9. ML-BOM from the pushed model (no weights downloaded), signed by erin, attached twice"
modelseal bom "$STORE:v1" --signer keys/erin.key --attach --model-card model/README.md \
  --dataset data/train.csv=demo-train --metrics eval/metrics.json \
  --environment "$(python -c 'import sys; print(sys.prefix)')"

step "10. what the model is made of, for a person"
modelseal inspect "$STORE:v1" --bom

step "11. push again: unchanged content is a no-op"
modelseal push model "$STORE:v1" --name tiny-mlp --version 1.0.0 --architecture mlp --format safetensors

step "12. change a file and push to the same tag: refused (tags never move silently)"
cp -r model model-changed; echo "changed" >> model-changed/README.md
expect_refusal 5 modelseal push model-changed "$STORE:v1" --name tiny-mlp --version 1.0.0 \
  --architecture mlp --format safetensors

step "13. inspect"
modelseal inspect "$STORE:v1"

step "14. the deployer's rules: a signed layout (who may sign which step and which transition)"
# release managers frank, grace, heidi: 2 of them promote to production (the template says
# none of them may have signed train); heidi may retire
modelseal layout new --template ml-pipeline --functionary prepare-data=keys/alice.pub \
  --functionary train=keys/bob.pub --functionary evaluate=keys/carol.pub \
  --functionary approve=keys/dave.pub --functionary package=keys/erin.pub \
  -f promote:production=keys/frank.pub -f promote:production=keys/grace.pub \
  -f promote:production=keys/heidi.pub -f retire=keys/heidi.pub \
  --expires 180d -o root.layout.json
modelseal layout check root.layout.json
modelseal layout sign root.layout.json --key keys/owner.key
cat > policy.yaml <<'YAML'
layout: root.layout.json
layout_keys: [keys/owner.pub]
required_predicates:
  - {type: https://slsa.dev/provenance/v1, step: train}
  - {type: https://in-toto.io/attestation/test-result/v0.1, step: evaluate}
  - https://cyclonedx.org/bom
distinct_signers: [[train, approve]]
max_attestation_age: 30d
model_safety: true
required_stage: production        # promoted by the layout's release managers
stage_max_age: 30d                # and (re-)affirmed within 30 days
trusted_tsa: [tsa/ca.pem]         # whose timestamps date signatures
YAML
cat policy.yaml

step "15. verify before rollout (metadata only, no weights downloaded): not promoted yet"
expect_refusal 10 modelseal verify "$STORE:v1" --policy policy.yaml

step "16. promotion to production: frank proposes (CHG-1234), grace approves; both timestamped"
modelseal promote "$STORE:v1" --stage production --signer keys/frank.key --ticket CHG-1234 \
  --reason "evaluation passed, accuracy >= 0.9" --policy policy.yaml
modelseal promote "$STORE:v1" --stage production --signer keys/grace.key --policy policy.yaml

step "17. verify before rollout: every step, every requirement, the stage"
modelseal verify "$STORE:v1" --policy policy.yaml --state "$OUT/state"

step "18. the model's history: every record in order, who signed it, where its time comes from"
modelseal history "$STORE:v1" --policy policy.yaml
modelseal history "$STORE:v1" --policy policy.yaml --json > history.json
python - history.json <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
print(f"history.json: stage {h['stage']}, status {h['status']}, {len(h['events'])} events")
for e in h["events"]:
    print(f"  {e['time']} ({e['timeSource']:10}) {e['what']:45} by {'; '.join(e['who'])}")
PY

step "18b. lineage: index the store (verified evidence only) and ask where train.csv went"
rm -f "$OUT/lineage.db"
modelseal index "$STORE" --policy policy.yaml --db "sqlite:///$OUT/lineage.db"
# by digest: the provenance (train) and the ML-BOM (package) name the same dataset bytes
modelseal lineage --dataset "sha256:$(sha256sum data/train.csv | cut -d' ' -f1)" \
  --db "sqlite:///$OUT/lineage.db" --verified-only
modelseal lineage --model "$STORE:v1" --db "sqlite:///$OUT/lineage.db"

step "19. verified pull: only what was verified is written, every blob checked"
modelseal pull "$STORE:v1" deploy --policy policy.yaml
diff -r model deploy && echo "deployed copy is identical to the original"

step "20. plain pull and byte-for-byte comparison"
modelseal pull "$STORE:v1" pulled
diff -r model pulled && echo "pulled copy is identical to the original"

step "21. the auditor's report: one self-contained HTML file"
modelseal audit "$STORE:v1" --policy policy.yaml --html report.html
echo "open $OUT/report.html in a browser"

step "22. an offline audit bundle (policy, layout, keys, trusted roots, TSA certificate inside)"
modelseal bundle export "$STORE:v1" -o model-audit.tar --policy policy.yaml --with-weights
offline=""
if command -v unshare >/dev/null && unshare -rn true 2>/dev/null; then
  offline="unshare -rn"   # a network namespace with no interface up: truly offline
fi
$offline modelseal bundle verify model-audit.tar

step "23. the bundle restored into a second home (another oci: directory, or a registry)"
modelseal copy oci-archive:model-audit.tar "oci:$OUT/restored:v1"
modelseal verify "oci:$OUT/restored:v1" --policy policy.yaml

step "24. attack: someone moves the tag to a model the pipeline never produced"
cp -r store store-attacked
cp -r model model-evil; printf 'backdoor' >> model-evil/model.safetensors
modelseal push model-evil "oci:$OUT/store-attacked:v1" --name tiny-mlp --version 1.0.0 \
  --architecture mlp --format safetensors --allow-retag
expect_refusal 10 modelseal verify "oci:$OUT/store-attacked:v1" --policy policy.yaml

step "25. attack: a weights blob swapped in storage; the metadata still verifies, the pull refuses"
cp -r store store-swapped
digest=$(modelseal inspect "$STORE:v1" --json | python -c '
import json, sys
m = json.load(sys.stdin)["manifest"]
print(next(l["digest"] for l in m["layers"] if l["annotations"]["org.cncf.model.filepath"] == "model.safetensors"))')
blob="store-swapped/blobs/sha256/${digest#sha256:}"
chmod u+w "$blob"; printf 'swapped' >> "$blob"
mkdir -p deploy-2; echo "previous release" > deploy-2/KEEP
# --overwrite: the target holds the previous release, which a good pull would replace whole
expect_refusal 4 modelseal pull "oci:$OUT/store-swapped:v1" deploy-2 --policy policy.yaml --overwrite
echo "deploy-2 is untouched: $(ls deploy-2)"

step "26. retirement: heidi retires the model (a new signed record); it no longer verifies"
modelseal retire "$STORE:v1" --signer keys/heidi.key --reason "training data leak" \
  --ticket INC-77 --policy policy.yaml --json > retire.json
cat retire.json
expect_refusal 10 modelseal verify "$STORE:v1" --policy policy.yaml --state "$OUT/state"

step "27. attack: the retirement is deleted from the oci: directory; this verifier remembers it"
cp -r store store-deleted
python - store-deleted retire.json <<'PY'
import json, os, sys
root, referrer = sys.argv[1], json.load(open(sys.argv[2]))["referrer"]
index = json.load(open(os.path.join(root, "index.json")))
index["manifests"] = [m for m in index["manifests"] if m["digest"] != referrer]
json.dump(index, open(os.path.join(root, "index.json"), "w"))
os.remove(os.path.join(root, "blobs", "sha256", referrer.split(":")[1]))
print(f"deleted the retirement referrer {referrer} (its tag and its manifest)")
PY
expect_refusal 10 modelseal verify "oci:$OUT/store-deleted:v1" --policy policy.yaml \
  --state "$OUT/state"

printf '\ndemo finished in %ss: everything is in %s (report: %s)\n' \
  "$((SECONDS - START))" "$OUT" "$OUT/report.html"
