"""The process's wiring: its settings, read once, and the clients and parts built from them.

app.py's handlers ask ``current()`` for the Runtime and call it; nothing else
in chalicelib reads the environment (config.py does, for ``current()``) or
holds a client. A Runtime makes its clients on first use, one per service,
shared by every thread, so an import makes no AWS call and a warm container
reuses them. The read API and the reconciler are imported on first use: the
event functions' cold starts never load them.

The tests, the local runs and the tools build a Runtime of their own (from a
Config they choose, with the clocks they choose) and install it with ``use``.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, TypeVar

from chalicelib.config import Config, from_environment
from chalicelib.ingest.dead_letters import DeadLetters, new_sqs_client
from chalicelib.ingest.recorder import Recorder
from chalicelib.model.clock import Clock
from chalicelib.observability import Telemetry
from chalicelib.store import StateStore
from chalicelib.store.client import new_client
from chalicelib.store.high_water import HighWaterMarks

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_sqs import SQSClient

    from chalicelib.api.reads import ReadApi

T = TypeVar("T")
_CLIENTS = ("dynamodb", "ecs", "sqs")  # the parts that depend on no setting


class Runtime:
    """``config``: the stage's settings; ``now``: the wall clock; ``monotonic``: the clock that
    times the reconciler's and the read API's budgets."""

    def __init__(self, config: Config, now: Clock = time.time, monotonic: Clock = time.monotonic) -> None:
        self.config = config
        self.now = now
        self.monotonic = monotonic
        self._parts: Dict[str, Any] = {}
        self._lock = threading.RLock()  # boto3's session is not thread-safe; the local run uses threads

    def _part(self, name: str, make: Callable[[], T]) -> T:
        """The part ``name``, made once; published only once complete (its hooks registered)."""
        part = self._parts.get(name)
        if part is None:
            with self._lock:
                part = self._parts.get(name)
                if part is None:
                    part = self._parts[name] = make()
        return part

    def replace(self, now: Optional[Clock] = None, monotonic: Optional[Clock] = None, **settings: Any) -> "Runtime":
        """A Runtime with these settings (Config's fields) and clocks changed, sharing this one's
        clients (they do not depend on the settings): the parts built from the settings are new."""
        changed = Runtime(self.config._replace(**settings), now or self.now, monotonic or self.monotonic)
        changed._parts.update({name: part for name, part in self._parts.items() if name in _CLIENTS})
        return changed

    # -- clients ---------------------------------------------------------------------------

    def dynamodb(self) -> "DynamoDBClient":
        return self._part("dynamodb", new_client)

    def ecs(self) -> "ECSClient":
        from chalicelib.reconcile.ecs import new_ecs_client

        return self._part("ecs", new_ecs_client)

    def sqs(self) -> "SQSClient":
        return self._part("sqs", new_sqs_client)

    # -- parts -----------------------------------------------------------------------------

    @property
    def telemetry(self) -> Telemetry:
        return self._part("telemetry", lambda: Telemetry(self.config.service, self.config.metrics_namespace))

    @property
    def marks(self) -> Optional[HighWaterMarks]:
        """The process's high-water marks, or None when the stage turns them off."""
        if not self.config.high_water_marks:
            return None
        config = self.config
        return self._part("marks", lambda: HighWaterMarks(config.high_water_entries, config.high_water_seconds,
                                                          clock=self.monotonic))

    @property
    def store(self) -> StateStore:
        return self._part("store", lambda: StateStore(self.dynamodb(), self.config, self.marks, now=self.now))

    @property
    def recorder(self) -> Recorder:
        def make() -> Recorder:
            queue = self.config.dead_letter_queue
            dead_letters = DeadLetters(queue, self.sqs) if queue else None
            return Recorder(self.store, self.config.rules, dead_letters, self.telemetry, now=self.now)

        return self._part("recorder", make)

    def read_api(self) -> "ReadApi":
        from chalicelib.api.reads import ReadApi

        # No high-water marks: a read never writes.
        return self._part("read_api", lambda: ReadApi(StateStore(self.dynamodb(), self.config, now=self.now),
                                                      self.config, self.telemetry, clock=self.monotonic,
                                                      now=self.now))

    # -- what the handlers call ----------------------------------------------------------------

    def record(self, event: Any, context: Any = None) -> Dict[str, Any]:
        """Record one EventBridge event (chalicelib/ingest/recorder.py)."""
        return self.recorder.record(event, context)

    def reconcile(self, event: Any, context: Any = None, budget_seconds: Optional[float] = None) -> Dict[str, Any]:
        """One reconcile pass over the account (chalicelib/reconcile/passes.py)."""
        from chalicelib.reconcile.passes import reconcile

        return reconcile(event, context, config=self.config, dynamodb=self.dynamodb, ecs=self.ecs,
                         telemetry=self.telemetry, now=self.now, monotonic=self.monotonic,
                         budget_seconds=budget_seconds)


_current: Optional[Runtime] = None
_current_lock = threading.Lock()


def current() -> Runtime:
    """The process's Runtime: built from the environment on first use (a bad setting raises
    ConfigError here, naming its variable), then the same one for every invocation."""
    global _current
    runtime = _current
    if runtime is None:
        with _current_lock:
            if _current is None:
                _current = Runtime(from_environment())
            runtime = _current
    return runtime


def use(runtime: Runtime) -> Runtime:
    """Make ``runtime`` the process's (tests, local runs, the tools); returns it."""
    global _current
    with _current_lock:
        _current = runtime
    return runtime


def reset() -> None:
    """Forget the process's Runtime: the next ``current()`` reads the environment again and knows
    nothing of earlier clients, tables or marks (tests, local runs)."""
    global _current
    with _current_lock:
        _current = None
