"""The error tree and the exit codes. Library code raises these; only the CLI turns them into exits.

Every error carries a short machine-readable ``kind`` and a one-line message, so that the CLI's single
funnel can print a one-line error (or a JSON object under ``--json``) and exit with a code that tells
a denial apart from a crash.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses. 1 is reserved for a real denial, never for a crash."""

    OK = 0
    DENIED = 1  # guard/check denied, register refused on a conflict
    USAGE = 2  # bad flag, bad value, unknown option
    NOT_FOUND = 3  # release/heartbeat of something that is not registered
    CONFIG = 4  # config.json unreadable or invalid
    DATABASE = 5  # registry.db corrupt, locked past the timeout, or unwritable
    INTEGRITY = 6  # the audit chain does not verify
    UNAVAILABLE = 7  # a probe or a tool that the command needs is missing
    UNHEALTHY = 8  # health found a critical alert
    STATE_FILE = 9  # a state file (state.json, the cycle snapshot, a report) could not be written
    INTERNAL = 70  # a bug: reported in one line, with --debug for the traceback


class FleetError(Exception):
    """Root of every error that Fleet Watch raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL
    kind: str = "error"

    def __init__(self, message: str, *, extra: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}  # machine-readable fields added to the JSON error object

    def __str__(self) -> str:
        return self.message


class UsageError(FleetError):
    """An input from outside (flag, JSON, file argument) is malformed or out of range."""

    exit_code = ExitCode.USAGE
    kind = "usage_error"


class Forbidden(FleetError):
    """The caller may not do this to a resource it does not own (another user's, another session's lease)."""

    exit_code = ExitCode.DENIED
    kind = "forbidden"


class NotFound(FleetError):
    exit_code = ExitCode.NOT_FOUND
    kind = "not_found"


class ConfigError(FleetError):
    exit_code = ExitCode.CONFIG
    kind = "config_error"


class DatabaseError(FleetError):
    exit_code = ExitCode.DATABASE
    kind = "database_error"


class StateFileError(FleetError):
    """A state file could not be written (a full disk, a read-only or foreign-owned state directory)."""

    exit_code = ExitCode.STATE_FILE
    kind = "state_file_error"


class IntegrityError(FleetError):
    exit_code = ExitCode.INTEGRITY
    kind = "integrity_error"


class Unavailable(FleetError):
    exit_code = ExitCode.UNAVAILABLE
    kind = "unavailable"


class Conflict(FleetError):
    """A claim was refused because another live holder has the resource. Raised after the CONFLICT event."""

    exit_code = ExitCode.DENIED
    kind = "conflict"

    def __init__(self, message: str, *, resource: str, holder: dict[str, object] | None = None) -> None:
        super().__init__(message, extra={"resource": resource, "holder": holder})
        self.resource = resource
        self.holder = holder


class CannotUnload(FleetError):
    """A model server that cannot (or would not) give a model back over its API. Exit 1, with the reason."""

    exit_code = ExitCode.DENIED
    kind = "cannot_unload"


class ToolFailed(Unavailable):
    """An outside tool ran but failed or printed something unreadable: nothing was changed (exit 7)."""

    kind = "tool_failed"
