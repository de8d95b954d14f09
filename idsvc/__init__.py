"""idsvc: a directory-centric identity and authentication service for mail systems."""

__version__ = "0.1.0"
