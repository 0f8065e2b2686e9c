"""Checked steps: each one looks first and changes only what is missing (idempotent reruns).

A :class:`Step` has a ``check`` that returns a :class:`~.faults.Finding` and, where cman
can mend it, a ``repair``; :func:`run_steps` runs them in order, reports each on
``notify`` as it runs, and stops at the first one that stays broken with a
:class:`ProvisionFailed` that names the step, the cause and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._sys.retry import idempotent
from ..errors import CmanError, ExitCode
from ..models import _Jsonable
from .faults import OK, PROBLEM, WARNING, Finding
from .guest import engine_failed

Notify = Callable[[str], None]

DONE, REPAIRED, FAILED = "ok", "repaired", "failed"


class ProvisionFailed(CmanError):
    """A step that stayed broken after its repair (exit 8, README "Exit codes")."""

    exit_code = ExitCode.PROVISION_FAILED

    def __init__(self, step: str, finding: Finding) -> None:
        cause = f" ({finding.name})" if finding.name != step else ""
        super().__init__(f"provision step {step} failed{cause}: {finding.detail}", hint=finding.fix or None)
        self.step, self.finding = step, finding


@dataclass
class Step:
    name: str
    check: Callable[[], Finding]
    repair: Callable[[Finding], str] | None = None
    """Mends what ``check`` found; returns what it did, in a few words."""


@dataclass(frozen=True)
class StepResult(_Jsonable):
    name: str
    status: str
    """``ok`` (nothing to do), ``repaired`` (done now) or ``failed``."""
    detail: str
    warnings: tuple[str, ...] = ()


@dataclass
class Report(_Jsonable):
    steps: list[StepResult] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(s.status == REPAIRED for s in self.steps)


@idempotent(engine_failed)
def _attempt(step: Step, did: list[str]) -> Finding:
    """Look, mend what is missing, look again. A step looks before it acts, so when the engine
    failed to run one of its commands (:class:`~cman.errors.EngineExecFailed`), it is run again
    from its look; ``did`` keeps what any attempt mended."""
    found = step.check()
    if found.status == PROBLEM and step.repair is not None:
        did.append(step.repair(found))
        found = step.check()
    return found


def run_steps(steps: Sequence[Step], notify: Notify, report: Report | None = None) -> Report:
    report = report if report is not None else Report()
    for i, step in enumerate(steps, 1):
        prefix = f"[{i}/{len(steps)}] {step.name}"
        notify(f"{prefix} ...")
        did: list[str] = []
        found = _attempt(step, did)
        status, detail = DONE, found.detail
        if did:
            status, detail = REPAIRED, f"{did[-1]}; {found.detail}" if found.status != PROBLEM else found.detail
        warnings = (f"{found.name}: {found.detail}: {found.fix}",) if found.status == WARNING else ()
        if found.status == PROBLEM:
            report.steps.append(StepResult(step.name, FAILED, found.detail))
            notify(f"{prefix}: failed: {found.detail}")
            raise ProvisionFailed(step.name, found)
        report.steps.append(StepResult(step.name, status, detail, warnings))
        notify(f"{prefix}: {'repaired: ' if status == REPAIRED else 'ok: '}{detail}")
        for warning in warnings:
            notify(f"{prefix}: warning: {warning}")
    return report


def ok(name: str, detail: str) -> Finding:
    return Finding(name, OK, detail)


def problem(name: str, detail: str, fix: str = "") -> Finding:
    return Finding(name, PROBLEM, detail, fix)
