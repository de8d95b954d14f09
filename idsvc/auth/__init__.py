"""The auth core: one Authenticator that every protocol adapter calls (engine.py)."""
