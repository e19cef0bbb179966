"""Zero-shot classification with a text-image model's text tower: no training at all."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.search import l2_normalise
from harness.settings import Table, Templates
from harness.stats import classification_items
from harness.strategies.base import CLASSIFICATION, Features, Outcome, strategy

# A small e-commerce prompt set; the class name fills the braces.
TEMPLATES = (
    "a product photo of a {}.",
    "a photo of a {}, a type of product.",
    "an online shop photo of a {}.",
    "a catalogue image of a {}.",
    "a close-up product photo of the {}.",
)


def class_prototypes(text: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean of each class's L2-normalised prompt embeddings, normalised again (CLIP's
    prompt ensembling). ``text`` rows are ordered class by class."""
    per_class = l2_normalise(text).reshape(n_classes, -1, text.shape[1])
    return l2_normalise(per_class.mean(axis=1))


class ZeroshotSettings(Table):
    """``[strategy.zeroshot]``: the prompt templates; ``{}`` is where the class name goes."""

    templates: Templates = TEMPLATES


@strategy(
    "zeroshot",
    CLASSIFICATION,
    main_metric="accuracy",
    settings=ZeroshotSettings,
    needs_text=True,
    splits=("test",),
    labels_from="none",
)
def zeroshot(data: Features, params: Mapping[str, Any]) -> Outcome:
    """Cosine argmax between each test image and class prototypes built from prompts.

    Prompts are every template × class name of the dataset entry; the train split is not
    used. Nothing trains: embedding the prompts (the text tower, built on first use) is
    its own phase, ``prompts``, which the cell's cost counts as embedding.
    """
    if data.encode_text is None or len(data.class_names) != data.n_classes:
        raise ValueError("zeroshot needs a text encoder and one name per class")
    start = time.perf_counter()
    prompts = [t.format(name) for name in data.class_names for t in params["templates"]]
    prototypes = class_prototypes(data.encode_text(prompts), data.n_classes)
    encoded = time.perf_counter()
    scores = l2_normalise(data.test) @ prototypes.T
    seconds = {"prompts": encoded - start, "fit": 0.0, "eval": time.perf_counter() - encoded}
    return Outcome(
        classification_items(data.test_labels, scores), seconds, {"prompts": len(prompts)}
    )
