"""cliplens: explain what CLIP models see (perturbations, CLIP Surgery, head-level interpretation)."""

__version__ = "0.1.0"
