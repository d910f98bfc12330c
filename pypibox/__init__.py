"""pypibox: a private Python package index built on pypiserver."""

__version__ = "0.1.0"
