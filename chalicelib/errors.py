"""The errors ecs-state raises on purpose: one base, and a branch for those no retry can mend.

Raising fails the Lambda invocation, so Lambda retries it and the on-failure
destination keeps the event: nothing is dropped silently. A PermanentError
would fail every retry alike: the recorder sends its event to the dead-letter
queue at once, and the read API answers it with a 4xx; it tests the branch,
never a list of classes.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional


class EcsStateError(Exception):
    """Every error ecs-state raises on purpose."""


class PermanentError(EcsStateError):
    """The same input fails the same way every time: retrying cannot help."""


class InvalidEvent(PermanentError, ValueError):
    """The event cannot be recorded as it is; nothing was written for it.

    ``field`` is a path into the event (``detail.containers[0].name``),
    ``problem`` says what is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        # A JSON name can hold a lone surrogate, which no UTF-8 log line can
        # carry (the rejection's log line was lost): name it escaped, as \ud800.
        field = field.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ItemTooLarge(InvalidEvent):
    """The item would exceed DynamoDB's 400 KB item size limit."""


class StoredItemConflict(PermanentError, RuntimeError):
    """The stored item has a version ecs-state cannot compare with, so it refuses to guess."""


class ConfigError(EcsStateError, ValueError):
    """A setting's value is wrong; the message names its variable."""


class Unavailable(EcsStateError):
    """DynamoDB did not answer what was asked of it in time (it sheds load, throttles, or is slow):
    the caller may try again later."""


class OutOfTime(EcsStateError):
    """A reconcile pass's time is up: it stops before its next request, and says it is not complete."""


class ReconcileFailed(EcsStateError, RuntimeError):
    """The pass failed (a cluster, the account, a setting, or an unexpected error on an item):
    its summary, logged already, says which and why."""

    def __init__(self, summary: Mapping[str, Any]) -> None:
        super().__init__(f"reconcile pass failed: {'; '.join(summary['errors'])}")
        self.summary = summary


def aws_error_code(error: BaseException) -> Optional[str]:
    """The error code of an AWS service's answer (botocore's ClientError), else None.

    Read from the error's ``response`` so that this module imports no botocore."""
    response = getattr(error, "response", None)
    if not isinstance(response, Mapping):
        return None
    code = response.get("Error", {}).get("Code")
    return code if isinstance(code, str) else None


def aws_error_message(error: BaseException) -> str:
    """The message of an AWS service's answer (botocore's ClientError), else ""."""
    response = getattr(error, "response", None)
    message = response.get("Error", {}).get("Message") if isinstance(response, Mapping) else None
    return message if isinstance(message, str) else ""
