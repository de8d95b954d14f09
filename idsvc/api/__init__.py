"""The REST provisioning API (FastAPI): ``create_app`` builds it, ``ApiServer`` serves it."""

from idsvc.api.app import create_app

__all__ = ["create_app"]
