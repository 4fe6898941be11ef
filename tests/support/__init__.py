"""Helpers the tests and the tools share: the PyTorch reference harness and dataset fixtures."""
