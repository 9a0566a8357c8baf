"""Progress events of a procedure run (``Progress`` subclasses: the CLI printer
renders them as ``[step] message``; ``to_dict()`` gives them as JSON)."""

from dataclasses import dataclass

from sdcadm.progress import Progress


@dataclass(frozen=True)
class StepStarted(Progress):
    procedure: str = ""


@dataclass(frozen=True)
class StepFinished(Progress):
    procedure: str = ""
    elapsed: float = 0.0
    verified: bool = False
    result: dict | None = None


@dataclass(frozen=True)
class StepFailed(Progress):
    procedure: str = ""
    elapsed: float = 0.0
    error: str = ""
