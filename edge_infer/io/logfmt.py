"""The log line format of the long-running commands (serve, watch)."""

from __future__ import annotations

import logging

from .writers import printable


class PrintableFormatter(logging.Formatter):
    """Log lines whose message has its control characters escaped (formats.printable): a file
    name or a request line cannot end a line, forge another or drive the terminal. Tracebacks
    keep their own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = printable(record.message)
        return super().formatMessage(record)
