"""idsvc: a directory-centric identity and authentication service for mail systems."""

from idsvc import _native

__version__ = "0.1.0"

# the compiled hot path when it is built and current (idsvc/_native.py), before anything imports it
_native.install()
