"""`run` and `create` through the real CLI entry point, in-process, over an in-memory backend."""

from __future__ import annotations

import pytest

import cman.backends
from cman.cli import main
from cman.errors import EngineError
from cman.models import RUN_LABEL

from .fake_backend import FakeBackend


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    backend = FakeBackend()
    monkeypatch.setattr(cman.backends, "load", lambda name: backend)
    return backend


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("verb", ["run", "create"])
def test_privileged_is_asked_for_and_said_on_stderr(fake: FakeBackend, capsys: pytest.CaptureFixture[str],
                                                    verb: str) -> None:
    code = main(["--backend", "docker", verb, "--privileged", "--name", "p", "img", "true"])
    err = _lines(capsys.readouterr().err)
    assert code == 0, err
    assert fake.made["p"].privileged
    assert len(err) == 1 and err[0].startswith("cman: warning: ")
    assert "privileged on docker" in err[0] and "all capabilities" in err[0]


def test_without_privileged_nothing_is_said(fake: FakeBackend, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend", "docker", "run", "--name", "q", "img", "true"]) == 0
    assert capsys.readouterr().err == ""
    assert not fake.made["q"].privileged
    assert RUN_LABEL in fake.made["q"].labels


@pytest.mark.parametrize(("verb", "code"), [("run", 125), ("create", 2)])
def test_a_label_in_cmans_namespace_is_one_line_and_no_engine_call(
    fake: FakeBackend, capsys: pytest.CaptureFixture[str], verb: str, code: int,
) -> None:
    """`create` exits 2 (bad input); `run` reports its own failures as 125, as `docker run` does."""
    assert main(["--backend", "docker", verb, "--label", "cman.managed=false", "img", "true"]) == code
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("cman: invalid --label") and "cman's own" in err[0]
    assert fake.calls == []


def test_a_failed_rm_is_a_warning_and_the_exit_code_is_the_commands(
    fake: FakeBackend, capsys: pytest.CaptureFixture[str],
) -> None:
    fake.exit_code, fake.remove_error = 3, EngineError("docker: removal of container r is already in progress")
    assert main(["--backend", "docker", "run", "--rm", "--name", "r", "img", "true"]) == 3
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("cman: warning: could not remove container r"), err


def test_a_failed_cleanup_after_a_failed_start_is_said_on_the_errors_line(
    fake: FakeBackend, capsys: pytest.CaptureFixture[str],
) -> None:
    fake.start_error, fake.remove_error = EngineError("start broke"), EngineError("remove broke")
    assert main(["--backend", "docker", "run", "--rm", "--name", "s", "img", "true"]) == 125
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("cman: start broke; and could not remove container s")
    assert "remove broke" in err[0]
