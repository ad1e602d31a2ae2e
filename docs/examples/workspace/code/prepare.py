"""prepare-data: split raw/transactions.csv into data/train.csv and data/test.csv."""

import csv
import os

os.makedirs("data", exist_ok=True)
with open("raw/transactions.csv", newline="") as f:
    rows = list(csv.DictReader(f))
split = int(len(rows) * 0.8)
for name, part in (("train", rows[:split]), ("test", rows[split:])):
    with open(f"data/{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(part)
print(f"prepared {split} training and {len(rows) - split} test rows")
