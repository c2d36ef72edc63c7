"""The LLM test harness itself: its settings are test settings, and its servers leave the
process's logging as they found it (a later test that logs through uvicorn must see it)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette

from app.core.config import Settings
from tests.llm.fake_llm import serve


def test_llm_settings_run_as_test_environment(llm_settings: Callable[..., Settings]) -> None:
    assert llm_settings().environment == "test"


async def test_serve_leaves_uvicorn_loggers_alone() -> None:
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg.level, lg.propagate, lg.handlers[:]) for lg in loggers]
    try:
        for lg in loggers:  # as configure_logging leaves them (a server may have run before)
            lg.setLevel(logging.NOTSET)
            lg.propagate = True
            lg.handlers[:] = []
        async with serve(Starlette()):
            pass
        after = {lg.name: (lg.level, lg.propagate, len(lg.handlers)) for lg in loggers}
        assert after == dict.fromkeys(names, (logging.NOTSET, True, 0))
    finally:
        for lg, (level, propagate, handlers) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers[:] = handlers
