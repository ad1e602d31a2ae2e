"""evaluate: score model/ on data/test.csv; write eval/metrics.json."""

import csv
import json
import math
import os
import struct

with open("model/model.safetensors", "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    f.read(n)
    w = struct.unpack("<4f", f.read(16))
with open("data/test.csv", newline="") as f:
    rows = list(csv.DictReader(f))
correct = 0
for row in rows:
    x = [float(row["amount"]) / 400, float(float(row["hour"]) < 5), float(row["foreign"]), 1.0]
    p = 1 / (1 + math.exp(-sum(a * b for a, b in zip(w, x, strict=True))))
    correct += int((p > 0.5) == bool(int(row["fraud"])))
os.makedirs("eval", exist_ok=True)
metrics = {"accuracy": round(correct / len(rows), 4), "test_rows": len(rows)}
with open("eval/metrics.json", "w") as f:
    json.dump(metrics, f, indent=2)
print(json.dumps(metrics))
