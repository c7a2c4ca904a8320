"""Client errors are logged as one line, at WARNING, without the values the client sent.

BentoML logs every rejected request at ERROR with the whole traceback, and pydantic's error text
quotes the input (``input_value={'customer_id': 'carol@example.com', ...}``): a client bug would
flood the logs and write personal data into them. This filter rewrites those records in place:
a 4xx becomes ``client error 400 on /score [POST]: contact.channel literal_error, ...`` (fields
and rule names only, never values); real server errors (5xx) keep their traceback.
"""

from __future__ import annotations

import logging
from typing import Any

# The logger BentoML's HTTP app reports request exceptions on (a name, not an import).
BENTOML_REQUEST_LOGGERS = ("bentoml._internal.server.http_app", "bentoml.server.http_app")


def _client_error(exc: BaseException) -> tuple[int, str] | None:
    """(status, value-free summary) when ``exc`` is the client's fault, else None."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        fields = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = [str(part) for part in error["loc"]]
            if error["type"] == "extra_forbidden" and loc:
                loc[-1] = "<unknown field>"  # the name itself came from the client
            fields.append(f"{'.'.join(loc) or '(body)'} {error['type']}")
        return 400, f"{exc.error_count()} invalid field(s): {', '.join(fields[:10])}"
    status = getattr(exc, "status_code", None)
    if status is None:
        code = getattr(exc, "error_code", None)
        status = getattr(code, "value", None)
    if isinstance(status, int) and 400 <= status < 500:
        return status, type(exc).__name__
    return None


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc_info: Any = record.exc_info
        if not exc_info or exc_info[1] is None:
            return True
        found = _client_error(exc_info[1])
        if found is None:
            return True
        status, summary = found
        args = (
            record.args if isinstance(record.args, tuple) and len(record.args) >= 2 else ("?", "?")
        )
        path, method = args[0], args[1]
        record.msg = "client error %d on %s [%s]: %s"
        record.args = (status, path, method, summary)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def install_client_error_filter() -> None:
    """Attach the filter to BentoML's request logger (idempotent)."""
    for name in BENTOML_REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
            logger.addFilter(ClientErrorFilter())
