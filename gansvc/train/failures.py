"""Which worker errors are worth a restart: deterministic errors stop a run at once, transient ones are retried.

Ray Train V2 (2.60) restarts the worker group on any worker error up to `FailureConfig(max_failures)`
(`ray/train/v2/_internal/execution/failure_handling/default.py`: every `WorkerGroupError` is retryable). A config,
dataset or programming error (ValueError, TypeError, KeyError... raised by our checks or our code) repeats on every
attempt, so restarting only delays the message by `max_failures` group start-ups. `StopOnDeterministicErrors` is the
default policy plus one rule: a worker group error in which any rank failed with a deterministic error is raised at
once. Transient failures (a killed worker, a collective broken by it, S3 unavailable: StorageError/OSError) are still
retried.

The policy is handed to the controller by `install_policy`: Ray 2.60 has no public hook, and
`DataParallelTrainer.fit` calls the module-level `create_failure_policy(failure_config)` of
`ray/train/v2/api/data_parallel_trainer.py`; we point that name at `make_policy`. The policy object is pickled into
the controller actor (it imports this module there). If a later Ray moves the name, fit runs with Ray's default
policy (retries) and `policy_installed()` says so (tests check it).
"""

from __future__ import annotations

from typing import Any

from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision
from ray.train.v2.api.exceptions import TrainingFailedError, WorkerGroupError

DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # includes pydantic ValidationError, our ConfigError and JSON decode errors
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    ZeroDivisionError,
    AssertionError,
)


class DeterministicError(Exception):
    """Raised by our own checks in a worker for a failure that would repeat on every restart (stop the run)."""


def is_deterministic(err: BaseException) -> bool:
    return isinstance(err, (DeterministicError, *DETERMINISTIC_ERRORS))


def describe(err: BaseException) -> str:
    """The user-facing message of a worker error: Ray wraps ours in WorkerGroupError (rank -> exception)."""
    failures = getattr(err, "worker_failures", None)
    if not failures:
        return str(err)
    parts = []
    for rank, e in sorted(failures.items()):
        parts.append(f"worker {rank}: {type(e).__name__}: {e}")
    return "\n".join(parts)


class StopOnDeterministicErrors(DefaultFailurePolicy):
    """Ray's default policy, except that a worker group error with a deterministic error in it is raised at once."""

    def make_decision(self, training_failed_error: TrainingFailedError) -> FailureDecision:
        if isinstance(training_failed_error, WorkerGroupError) and any(
            is_deterministic(e) for e in training_failed_error.worker_failures.values()
        ):
            return FailureDecision.RAISE
        return super().make_decision(training_failed_error)


def make_policy(failure_config: Any) -> StopOnDeterministicErrors:
    return StopOnDeterministicErrors(failure_config)


def policy_installed() -> bool:
    """Whether Ray Train's trainer module now creates `StopOnDeterministicErrors` policies."""
    from ray.train.v2.api import data_parallel_trainer as dpt

    return getattr(dpt, "create_failure_policy", None) is make_policy


def install_policy() -> bool:
    """Make every TorchTrainer.fit of this process use `StopOnDeterministicErrors` (idempotent; see the docstring).

    Installed for the process, not around one fit: a fit in another thread must not see the name swapped back in the
    middle of its start-up. Returns False when this Ray has no such hook (fits then retry every error).
    """
    from ray.train.v2.api import data_parallel_trainer as dpt

    if not hasattr(dpt, "create_failure_policy"):
        return False
    dpt.create_failure_policy = make_policy
    return True


def fit_stopping_on_deterministic_errors(trainer: Any) -> Any:
    """`trainer.fit()` with `StopOnDeterministicErrors` as the failure policy."""
    install_policy()
    return trainer.fit()
