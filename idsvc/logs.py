"""Process logging: text or JSON lines on stderr, level from settings, the audit logger included.

``setup_logging`` installs exactly one handler on the root logger (calling it again replaces it,
so tests and the CLI can call it freely). The ``idsvc.audit`` logger is a normal child: its JSON
events go through the same handler; in JSON format the event is embedded as an object under
``"audit"`` instead of a string.

Secrets: nothing here can know every secret, so callers never log one (rule 6). As a second line
of defence a filter masks ``password=…``/``resp=…``/``token=…`` style values and API token
strings (``idsvc_<id>_<secret>``) in every message before it is formatted.

How it fails: it does not; a record that cannot be formatted is reported by ``logging`` itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from idsvc.audit import AUDIT_LOGGER
from idsvc.config import LoggingSettings

_HANDLER_NAME = "idsvc"
_KEYS = r"password|passwd|pass|secret|token|resp|bind_password|writer_password"
_MASKS = (
    (re.compile(rf"(?i)\b({_KEYS})=[^\s,;&]+"), r"\1=***"),
    (re.compile(rf'(?i)"({_KEYS})"\s*:\s*"(?:[^"\\]|\\.)*"'), r'"\1":"***"'),
    (re.compile(r"\b(idsvc_[A-Za-z0-9]+_)[A-Za-z0-9_\-]{8,}"), r"\1***"),
)


def mask_secrets(text: str) -> str:
    """``text`` with secret-looking ``key=value`` pairs and token strings masked."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


class SecretMaskFilter(logging.Filter):
    """Masks secret-looking values in the formatted message (defence in depth)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ audit event, exception), and
    ``worker`` (e.g. ``w1``) in a worker process of ``idsvc serve --workers N``."""

    def __init__(self, tag: str | None = None) -> None:
        super().__init__()
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if self._tag:
            data["worker"] = self._tag
        message = record.getMessage()
        if record.name == AUDIT_LOGGER:
            try:
                data["audit"] = json.loads(message)
            except ValueError:
                data["message"] = message
        else:
            data["message"] = message
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def text_format(tag: str | None = None) -> str:
    """The text line format; ``tag`` (a worker, ``w1``) goes before the logger name."""
    return TEXT_FORMAT if not tag else TEXT_FORMAT.replace("%(name)s", f"[{tag}] %(name)s")


def setup_logging(
    settings: LoggingSettings,
    *,
    level: str | None = None,
    stream: TextIO | None = None,
    tag: str | None = None,
) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``level`` (default: settings.level). Returns the handler.
    ``tag`` names the worker process on every line."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(SecretMaskFilter())
    if settings.format == "json":
        handler.setFormatter(JsonFormatter(tag))
    else:
        handler.setFormatter(logging.Formatter(text_format(tag)))
    root.addHandler(handler)
    root.setLevel(level or settings.level)
    return handler


def reopen_logs() -> int:
    """Reopen file handlers (after logrotate); returns how many were reopened. Stream handlers on
    stderr have nothing to reopen."""
    count = 0
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()
            count += 1
        else:
            handler.flush()
    return count
