"""The error types every layer raises; the CLI turns them into one readable line plus a hint."""

from __future__ import annotations

from dataclasses import dataclass


class CdpError(Exception):
    """Base of every error the product raises on purpose (as opposed to bugs)."""

    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class SpecProblem:
    """One problem in the analysts' YAML: where it is and what to do about it."""

    file: str
    line: int | None
    key: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class SpecError(CdpError):
    """The project's YAML is invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else "invalid project"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(first + more, hint="run `cdp validate` to list every problem")


class WarehouseError(CdpError):
    """The warehouse refused a statement or could not be reached."""


class LoadError(CdpError):
    """Input files for `cdp load` could not be read."""
