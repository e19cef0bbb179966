"""shelfbench: benchmark image-embedding backbones and tuning strategies for e-commerce.

Importing this package is cheap: torch, timm and open_clip are imported only by the
functions that compute embeddings.
"""

__version__ = "0.1.0"
