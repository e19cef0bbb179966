"""Runs from this checkout never reach a model hub: weights must be local (see README)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
