"""One structlog processor chain for our own loggers and for stdlib ones (uvicorn, DBOS, asyncpg).

Every line on stdout is one JSON object; on a TTY a console renderer is used instead.
Passwords and tokens are removed before rendering, whatever logger produced the line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import msgspec
import structlog
import structlog.tracebacks
from litestar.logging.config import LoggingConfig, StructLoggingConfig
from structlog.typing import EventDict, Processor, WrappedLogger

from services.shared.dsn import redact

# Keys whose values are secrets wherever they appear in an event.
_SECRET_KEYS = frozenset({"password", "passwd", "token", "authorization", "api_key", "secret"})
# Attributes DBOS sets on its stdlib records, renamed to our field names.
_DBOS_RECORD_FIELDS = {
    "operationUUID": "workflow_id",
    "executorID": "executor_id",
    "applicationVersion": "app_version",
}
# Third-party loggers routed through our handler (and not their own).
_FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "dbos", "asyncpg", "litestar")


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        # Only a string with '@' or '=' can carry a URL password or a password= pair.
        return redact(value) if ("@" in value or "=" in value) else value
    if isinstance(value, Mapping):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _json_line(event: Any, **_: Any) -> str:
    # msgspec renders several times faster than json.dumps; str() covers exotic values.
    return msgspec.json.encode(event, enc_hook=str).decode()


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Drop secret-named keys and strip passwords out of every string value."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _dbos_record_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        for attribute, field in _DBOS_RECORD_FIELDS.items():
            value = getattr(record, attribute, None)
            if value and field not in event_dict:
                event_dict[field] = value
    return event_dict


class _StaticFields:
    """Adds fields known for the whole process (service name, executor ID)."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key, value in self.fields.items():
            event_dict.setdefault(key, value)
        return event_dict


_static_fields = _StaticFields({})


def bind_process_fields(**fields: str) -> None:
    """Fields every later line carries, e.g. executor_id once settings are read."""
    _static_fields.fields.update(fields)


def _shared_chain(extra: Iterable[Processor]) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _dbos_record_fields,
        # The `extra` fields of stdlib records (the limbo client logs its facts that way).
        structlog.stdlib.ExtraAdder(),
        _static_fields,
        *extra,
        structlog.processors.StackInfoRenderer(),
    ]


def _renderer(as_json: bool) -> list[Processor]:
    if as_json:
        return [
            # Locals are left out of tracebacks: they can hold secrets and are huge.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            redact_secrets,
            structlog.processors.JSONRenderer(serializer=_json_line),
        ]
    return [redact_secrets, structlog.dev.ConsoleRenderer(colors=False)]


def logging_config(
    service: str,
    *,
    level: str = "INFO",
    as_json: bool | None = None,
    extra_processors: Iterable[Processor] = (),
) -> StructLoggingConfig:
    """The structlog configuration, in the form Litestar's StructlogPlugin takes."""
    if as_json is None:
        as_json = not sys.stdout.isatty()
    bind_process_fields(service=service)
    chain = _shared_chain(tuple(extra_processors))
    formatter: MutableMapping[str, Any] = {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": chain,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderer(as_json),
        ],
    }
    loggers = {
        name: {"handlers": ["stdout"], "level": level, "propagate": False}
        for name in _FOREIGN_LOGGERS
    }
    # asyncpg and uvicorn.access are chatty at INFO; warnings still come through.
    loggers["asyncpg"]["level"] = "WARNING"
    stdlib = LoggingConfig(
        formatters={"json": dict(formatter)},
        handlers={
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
            }
        },
        loggers=loggers,
        root={"handlers": ["stdout"], "level": level},
        disable_existing_loggers=False,
        log_exceptions="always",
    )
    return StructLoggingConfig(
        processors=[*chain, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        standard_lib_logging_config=stdlib,
        cache_logger_on_first_use=True,
        log_exceptions="always",
        pretty_print_tty=not as_json,
    )


def configure_logging(config: StructLoggingConfig) -> None:
    """Apply the configuration now, before DBOS or uvicorn create their loggers."""
    config.configure()
    assert config.standard_lib_logging_config is not None
    config.standard_lib_logging_config.configure()
    logging.captureWarnings(True)
