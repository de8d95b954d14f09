"""Where identities live: the capability Protocols (base.py) and one module per backend."""
