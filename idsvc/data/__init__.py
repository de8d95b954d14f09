"""Data files shipped with idsvc (the common-password blocklist); read with importlib.resources."""
