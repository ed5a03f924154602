"""Metamapper 1.0's default-queue tasks under their upstream names, one module per
upstream app (the names and what each does: :mod:`metamapper.protocol`)."""
