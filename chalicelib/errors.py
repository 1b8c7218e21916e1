"""The errors ecs-state raises on purpose.

Raising fails the Lambda invocation, so Lambda retries it and the on-failure
destination keeps the event: nothing is dropped silently.
"""


class InvalidEvent(ValueError):
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


class StoredItemConflict(RuntimeError):
    """The stored item has a version ecs-state cannot compare with, so it refuses to guess."""
