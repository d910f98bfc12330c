"""Benchmark of pypibox against nginx (static files) and the stock pypiserver image setup."""
