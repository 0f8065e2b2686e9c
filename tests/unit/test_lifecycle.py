"""lifecycle.run's promises over an in-memory backend: checks before any call, --rm, interrupts."""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Callable

import pytest

from cman import lifecycle
from cman._sys.proc import parse_mark, process_alive
from cman.errors import EngineError, EngineUnavailable, Interrupted, InvalidValue
from cman.models import RUN_LABEL, Container, ContainerSpec, State, StdIO

from .fake_backend import FakeBackend


def _io() -> StdIO:
    return StdIO(None, io.BytesIO(), io.BytesIO())


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def test_run_marks_the_container_with_this_process(fake: FakeBackend) -> None:
    out = lifecycle.run(fake, ContainerSpec(image="img", name="a", labels={"team": "blue"}), _io())
    spec = fake.made["a"]
    assert spec.labels["team"] == "blue"
    parsed = parse_mark(spec.labels[RUN_LABEL])
    assert parsed is not None and parsed[0] == os.getpid() and process_alive(*parsed)
    assert out.exit_code == 0 and not out.removed


def test_rm_in_the_foreground_asks_the_engine_to_remove_too(fake: FakeBackend) -> None:
    """--rm must hold when cman is SIGKILLed: only the engine can keep that promise."""
    out = lifecycle.run(fake, ContainerSpec(image="img", name="a"), _io(), remove=True)
    assert out.removed and not out.warnings
    assert "a" not in fake.made
    detached = lifecycle.run(fake, ContainerSpec(image="img", name="b"), _io(), remove=True, detach=True)
    assert fake.made["b"].auto_remove and not detached.removed


def test_a_container_the_engine_removed_counts_as_removed(fake: FakeBackend) -> None:
    fake.engine_removes, fake.exit_code = True, 3
    out = lifecycle.run(fake, ContainerSpec(image="img", name="a"), _io(), remove=True)
    assert (out.exit_code, out.removed, out.warnings) == (3, True, ())
    assert fake.calls.count("remove") == 1


def test_a_failed_rm_is_a_warning_and_the_exit_code_stays(fake: FakeBackend) -> None:
    fake.exit_code, fake.remove_error = 5, EngineError("the daemon said no")
    out = lifecycle.run(fake, ContainerSpec(image="img", name="a"), _io(), remove=True)
    assert out.exit_code == 5 and not out.removed
    assert len(out.warnings) == 1
    assert "could not remove container a" in out.warnings[0] and "the daemon said no" in out.warnings[0]
    assert "\n" not in out.warnings[0]


def test_a_failed_cleanup_after_a_failed_start_is_a_note_on_the_error(fake: FakeBackend) -> None:
    fake.start_error, fake.remove_error = EngineError("start broke"), EngineError("remove broke too")
    with pytest.raises(EngineError, match="start broke") as err:
        lifecycle.run(fake, ContainerSpec(image="img", name="a"), _io(), remove=True)
    notes = getattr(err.value, "__notes__", [])
    assert len(notes) == 1 and "remove broke too" in notes[0]


def _signal_to_main_thread() -> None:
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


def _handler_runs_now() -> None:
    """What a SIGTERM received by another thread of the process does: Python runs the
    handler in the main thread, at its next instruction, whatever that thread's mask."""
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    handler(signal.SIGTERM, None)


@pytest.mark.parametrize("arrives", [_signal_to_main_thread, _handler_runs_now], ids=["to-main", "via-other-thread"])
def test_an_interrupt_right_after_create_does_not_leak_the_container(
    fake: FakeBackend, arrives: Callable[[], None],
) -> None:
    """The signal lands while create() is returning: before the fix it was raised before
    the container reached the code that removes it."""
    fake.on_create = arrives
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM"):
        lifecycle.run(fake, ContainerSpec(image="img", name="a"), _io())
    assert fake.made == {}, "the container made before the signal was removed"
    assert fake.calls == ["image_inspect", "create", "remove"]
    assert signal.getsignal(signal.SIGTERM) == before
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def test_a_signal_during_the_rm_cleanup_waits_for_it(fake: FakeBackend) -> None:
    real_remove = fake.remove

    def remove(ref: str, *, force: bool = False) -> None:
        _handler_runs_now()
        real_remove(ref, force=force)

    fake.remove = remove  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        lifecycle.run(fake, ContainerSpec(image="img", name="a"), _io(), remove=True)
    assert fake.made == {}, "the removal was not cut short"


@pytest.mark.parametrize("labels", [{"cman.managed": "false"}, {"user.cman.label.x": "1"}, {RUN_LABEL: "1:2"}])
def test_cman_labels_are_refused_before_any_engine_call(fake: FakeBackend, labels: dict[str, str]) -> None:
    with pytest.raises(InvalidValue, match="cman's own"):
        lifecycle.run(fake, ContainerSpec(image="img", labels=labels), _io())
    with pytest.raises(InvalidValue, match="cman's own"):
        lifecycle.create(fake, ContainerSpec(image="img", labels=labels))
    assert fake.calls == []


def test_the_engine_spec_rules_run_before_any_engine_call(monkeypatch: pytest.MonkeyPatch, fake: FakeBackend) -> None:
    def rule(spec: ContainerSpec) -> None:
        if spec.privileged:
            raise InvalidValue("--privileged", True, "not on this engine")

    monkeypatch.setattr(FakeBackend, "spec_rule", staticmethod(rule))
    with pytest.raises(InvalidValue, match="not on this engine"):
        lifecycle.run(fake, ContainerSpec(image="img", privileged=True), _io())
    with pytest.raises(InvalidValue, match="not on this engine"):
        lifecycle.create(fake, ContainerSpec(image="missing", privileged=True))
    assert fake.calls == []
    lifecycle.create(fake, ContainerSpec(image="missing", name="x"))
    assert fake.calls == ["image_inspect", "pull", "create"]
    assert RUN_LABEL not in fake.made["x"].labels, "a plain create is the user's container, not a run's"


def test_a_detached_run_that_started_is_a_success_even_if_the_engine_then_goes_away(
    fake: FakeBackend, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dockerd stopping between start and the inspect that shows the result: the container runs
    (the daemon started it), so `run -d` reports it rather than failing with it left behind."""
    def gone(ref: str) -> Container:
        raise EngineUnavailable("fake", "daemon not reachable", "start it")

    monkeypatch.setattr(fake, "inspect", gone)
    out = lifecycle.run(fake, ContainerSpec(image="img", name="d"), _io(), detach=True)
    assert out.container.name == "d" and out.container.state == State.RUNNING
    assert "d" in fake.made and "remove" not in fake.calls
