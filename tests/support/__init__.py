"""Helpers the tests and the tools share: the PyTorch reference harness, dataset fixtures, and
`optional` (skip a test whose optional dependency is missing, naming the extra that provides it)."""
