"""The one error type of the spec layer: ``SpecError``, a one-line message naming file, line and field.

Its text reads ``FILE:LINE: FIELD.PATH: message`` (parts that are unknown are left out), for example
``workflow.yaml:12: workflow.groups[1].tasks[0].inputs[0].task: unknown task 'trainr'``.
"""

from __future__ import annotations


class SpecError(Exception):
    """A workflow spec (or a template, or a token) is not valid. ``str()`` is one line."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 path: str | None = None) -> None:
        self.message = " ".join(str(message).split("\n"))
        self.file = file
        self.line = line
        self.path = path
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        elif self.line:
            where = f"line {self.line}: "
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"

    def with_file(self, file: str | None) -> "SpecError":
        """The same error, naming ``file`` if it did not name one yet."""
        if self.file or not file:
            return self
        return SpecError(self.message, file=file, line=self.line, path=self.path)
