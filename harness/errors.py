"""The project's error types. Adapters translate their dependency's errors into these once,
at the boundary; the CLI maps every one of them to a one-line message and a non-zero exit."""


class HarnessError(Exception):
    """Base of every error the CLI reports as a one-line message."""

    exit_code = 2


class ConfigError(HarnessError):
    """A variant, suite or run setting is missing or malformed."""


class SuiteError(HarnessError):
    """A suite cannot be loaded, or one of its items is unusable."""


class ServerError(HarnessError):
    """The vLLM server could not be started, died, or is not an OpenAI-compatible server."""


class MeterError(HarnessError):
    """Power/energy measurement is unavailable or misconfigured."""


class ResultsError(HarnessError):
    """A results folder is missing, locked, unwritable or from an incompatible schema."""


class ComparisonError(HarnessError):
    """Runs handed to compare/gate/submit cannot be compared."""


class RunAborted(HarnessError):
    """The run stopped before all items were measured (server death, too many failures, signal).
    What was measured is on disk; the run can be resumed."""

    exit_code = 4


class HistoryError(HarnessError):
    """The history database cannot be opened, migrated, read or written."""
