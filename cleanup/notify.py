"""Notifications: one JSON event per state change of a job (SPEC.md "Jobs"; issue 16 part 5).

``configure`` sets the targets once per process; ``emit`` sends an event to every
target. Events are JSON objects ``{"event": NAME, "at": ISO-8601 UTC, ...fields}``;
webhooks receive them by HTTP POST (or, with ``slack=True``, a Slack-compatible
``{"text": ...}`` payload carrying the same fields), and with ``stdout=True`` each
event is also printed as one JSON line.

Notifying is never on the safety path: ``emit`` never raises, every webhook call has a
short timeout, and a target that fails is recorded in ``failures()`` and otherwise
ignored. A halt, a restore or a purge proceeds whether or not anybody was told.

Event names: ``plan-published``, ``approval-received``, ``waiting-for-witness``,
``stage-started``, ``stage-finished``, ``halted``, ``restored``, ``purged`` (and
``waiting`` for other waiting states of the runner).

This module imports nothing else of ``cleanup``: the executor and its watchdog import it.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENTS = (
    "plan-published",
    "approval-received",
    "waiting-for-witness",
    "waiting",
    "stage-started",
    "stage-finished",
    "halted",
    "restored",
    "purged",
)

TIMEOUT_SECONDS = 3.0
"""A webhook that does not answer within this many seconds is given up on."""


@dataclass
class _Config:
    webhooks: tuple[str, ...] = ()
    slack: bool = False
    stdout: bool = False
    link: str | None = None
    failures: list[str] = field(default_factory=list)


_config = _Config()
_guard = threading.Lock()


def configure(
    webhooks: Sequence[str] = (),
    slack: bool = False,
    stdout: bool = False,
    link: str | None = None,
) -> None:
    """Set the notification targets for this process (replacing earlier ones).

    ``webhooks``: http(s) URLs to POST each event to. ``slack``: send Slack-compatible
    ``{"text": ...}`` payloads instead of the bare event. ``stdout``: print each event
    as a JSON line. ``link``: a path or URL of the plan summary (``cleanup show
    --markdown``) added to every event as ``"link"``.
    """
    global _config
    with _guard:
        _config = _Config(tuple(webhooks), bool(slack), bool(stdout), link)


def failures() -> list[str]:
    """One line per notification that could not be delivered since ``configure``."""
    with _guard:
        return list(_config.failures)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def event_payload(event: str, **fields: Any) -> dict[str, Any]:
    """The JSON object for one event (what webhooks and stdout receive)."""
    payload: dict[str, Any] = {
        "event": event,
        "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    for key, value in fields.items():
        payload[key] = _jsonable(value)
    if _config.link is not None and "link" not in payload:
        payload["link"] = _config.link
    return payload


def slack_text(payload: dict[str, Any]) -> str:
    """A one-message human summary of an event for chat."""
    rest = ", ".join(
        f"{k}={v}" for k, v in payload.items() if k not in ("event", "at", "link")
    )
    text = f"cleanup: {payload['event']}" + (f" ({rest})" if rest else "")
    link = payload.get("link")
    if link:
        text += f" - plan summary: {link}"
    return text


def _post(url: str, body: bytes) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError("not an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
        response.read(1024)


def emit(event: str, **fields: Any) -> None:
    """Send one event to every configured target. Never raises."""
    try:
        with _guard:
            config = _config
        if not (config.webhooks or config.stdout):
            return
        payload = event_payload(event, **fields)
        line = json.dumps(payload, sort_keys=True)
        if config.stdout:
            try:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            except Exception as exc:  # noqa: BLE001 - notifying never blocks safety actions
                _record(f"stdout: {exc}")
        body = (
            json.dumps({"text": slack_text(payload), **payload}, sort_keys=True)
            if config.slack
            else line
        ).encode()
        for url in config.webhooks:
            try:
                _post(url, body)
            except Exception as exc:  # noqa: BLE001 - notifying never blocks safety actions
                _record(f"{url}: {type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - emit never raises
        _record(f"emit {event}: {type(exc).__name__}: {exc}")


def _record(line: str) -> None:
    try:
        with _guard:
            _config.failures.append(line)
            del _config.failures[:-100]
    except Exception:  # noqa: BLE001, S110 - emit never raises
        pass
