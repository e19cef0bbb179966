"""Recompute a knn cell's Recall@1 from `shelfbench export` output with numpy alone, and
compare it with the value in reports/latest.json (an independent check of the harness)."""

import json
import sys
from pathlib import Path

import numpy as np

export, report = Path(sys.argv[1]), Path(sys.argv[2])
meta = json.loads((export / "meta.json").read_text())
reported = {c["id"]: c for c in json.loads(report.read_text())["cells"]}[meta["cell"]]
train, test = np.load(export / "train.npy"), np.load(export / "test.npy")
train /= np.linalg.norm(train, axis=1, keepdims=True)
test /= np.linalg.norm(test, axis=1, keepdims=True)
nearest = np.argmax(test @ train.T, axis=1)
recall = float(
    np.mean(np.load(export / "train_labels.npy")[nearest] == np.load(export / "test_labels.npy"))
)
expected = reported["metrics"]["recall@1"]
print(f"{meta['cell']}: Recall@1 recomputed {recall:.6f}, reported {expected:.6f}")
sys.exit(0 if abs(recall - expected) <= 1e-6 else 1)
