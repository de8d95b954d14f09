"""``python -m mailsvc.webmail``: serve the webmail with uvicorn.

Settings from ``MAILSVC_WEBMAIL_*`` (see :class:`mailsvc.webmail.config.WebmailSettings`);
``MAILSVC_WEBMAIL_LISTEN`` is ``host:port`` (default ``127.0.0.1:8081``). Put it behind a TLS
proxy (the session cookie is ``Secure``).
"""

from __future__ import annotations

import os

import uvicorn

from mailsvc.webmail.app import create_app


def main() -> None:
    listen = os.environ.get("MAILSVC_WEBMAIL_LISTEN", "127.0.0.1:8081")
    host, _, port = listen.rpartition(":")
    print(f"webmail: http://{listen}/login", flush=True)
    uvicorn.run(create_app(), host=host.strip("[]"), port=int(port), access_log=False)


if __name__ == "__main__":
    main()
