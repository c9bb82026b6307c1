"""The Serve group's local Ray start tries again after Ray's startup timeout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from taskserve_conformance import serve as serve_group  # noqa: E402


def test_a_start_that_timed_out_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    folders: list[str] = []
    shutdowns: list[bool] = []

    def init(**options: Any) -> None:
        folders.append(options["_temp_dir"])
        if len(folders) == 1:
            raise Exception("The current node timed out during startup. ...")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))
    started = serve_group._start_local_ray()
    assert folders == [folders[0], started] and folders[0] != started
    assert shutdowns == [True]
    assert not Path(folders[0]).exists(), "the failed start's folder is left behind"
    os.rmdir(started)


def test_other_start_errors_are_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def init(**options: Any) -> None:
        calls.append(options["_temp_dir"])
        raise ValueError("bad option")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ValueError, match="bad option"):
        serve_group._start_local_ray()
    assert len(calls) == 1
    os.rmdir(calls[0])


def test_the_last_timeout_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def init(**options: Any) -> None:
        calls.append(options["_temp_dir"])
        raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(Exception, match="timed out during startup"):
        serve_group._start_local_ray()
    assert len(calls) == serve_group.RAY_START_ATTEMPTS
    os.rmdir(calls[-1])
