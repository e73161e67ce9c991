"""Triton kernels (installed as yyfast.kernels)."""
