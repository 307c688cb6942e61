"""LLM serving-plan compiler: Hydra configs in, an explained serving plan (and its launch) out."""

__version__ = "0.1.0"
