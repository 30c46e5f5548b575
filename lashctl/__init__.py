"""lashctl: the operator's tool for a lash attachment store."""

__version__ = "0.1.0"
