"""Shared code of the RE-Control stage scripts: one module per concern."""
