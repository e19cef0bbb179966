"""Fit scikit-learn's LogisticRegression on a linear cell's `shelfbench export` output, with
C chosen on the same validation split the cell used, and fail when the cell's reported
test accuracy is more than 0.3 points below scikit-learn's (a fidelity check of the probe).

usage: python .ci/linear_fidelity.py EXPORT_DIR reports/latest.json
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from harness.strategies.linear import stratified_holdout  # the split is the protocol

TOLERANCE = 0.003

export, report = Path(sys.argv[1]), Path(sys.argv[2])
meta = json.loads((export / "meta.json").read_text())
row = {c["id"]: c for c in json.loads(report.read_text())["cells"]}[meta["cell"]]
chosen = row["chosen"]


def normalised(name: str) -> np.ndarray:
    x = np.load(export / f"{name}.npy").astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


train, test = normalised("train"), normalised("test")
y_train, y_test = np.load(export / "train_labels.npy"), np.load(export / "test_labels.npy")
held = stratified_holdout(y_train, chosen["validation"], chosen["seed"])
start = time.perf_counter()
scores = {}
for c in sorted(float(c) for c in chosen["validation_accuracy"]):
    model = LogisticRegression(C=c, max_iter=1000).fit(train[~held], y_train[~held])
    scores[c] = float(np.mean(model.predict(train[held]) == y_train[held]))
best = max(scores, key=lambda c: (scores[c], -c))
model = LogisticRegression(C=best, max_iter=1000).fit(train, y_train)
reference = float(np.mean(model.predict(test) == y_test))
ours = row["metrics"]["accuracy"]
print(
    f"{meta['cell']}: scikit-learn C={best:g} accuracy {reference:.4f} "
    f"({time.perf_counter() - start:.0f} s); shelfbench C={chosen['C']:g} accuracy {ours:.4f}; "
    f"difference {ours - reference:+.4f}, tolerance -{TOLERANCE}"
)
sys.exit(0 if ours >= reference - TOLERANCE else 1)
