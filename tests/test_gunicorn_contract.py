"""The gunicorn names pypibox/worker.py relies on still exist (a version bump says so plainly)."""

from __future__ import annotations

import importlib
import inspect

import pytest

from pypibox.worker import CONTRACT, GunicornServer, Worker


@pytest.mark.parametrize("dotted", sorted(CONTRACT))
def test_gunicorn_still_has_what_pypibox_uses(dotted):
    module_name, _, class_name = dotted.rpartition(".")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    assert cls is not None, f"gunicorn has no {dotted} any more: pypibox/worker.py needs work"
    source = inspect.getsource(cls)
    for name in CONTRACT[dotted]:
        found = hasattr(cls, name) or f"self.{name} =" in source or f"self.{name}=" in source
        assert found, (f"gunicorn's {dotted} has no {name!r} any more: pypibox/worker.py "
                       "relies on it; read gunicorn's changelog and adapt worker.py")


def test_the_worker_overrides_keep_their_signatures():
    """init_process, init_signals and run take no arguments in gunicorn's base worker."""
    from gunicorn.workers.base import Worker as Base

    for name in ("init_process", "init_signals", "run"):
        params = list(inspect.signature(getattr(Base, name)).parameters)
        assert params == ["self"], f"gunicorn's Worker.{name}{params} changed: adapt worker.py"
    assert issubclass(Worker, Base)
    assert "load" in vars(GunicornServer) and "load_config" in vars(GunicornServer)
