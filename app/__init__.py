"""aai-proxy.

Two libraries import optional command-line extras whenever those are installed (typer
brings rich, pygments and click): `import httpx` loads its CLI (`httpx._main`, ~55 rich
modules) and `import structlog` loads rich for pretty tracebacks that our logging never
uses (`format_exc_info` renders exceptions as text first). Neither is ever used by the
service, yet together they keep ~3 MB resident in every process. A None entry in
`sys.modules` reads as "not installed" to those optional imports; it is removed again
right after, so rich stays importable for the CLI. tests/uploads/test_footprint.py checks
that the serving process stays free of them.
"""

import sys


def _import_without(module: str, hidden: tuple[str, ...]) -> None:
    if module in sys.modules or any(name in sys.modules for name in hidden):
        return
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        __import__(module)
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


_import_without("httpx", ("httpx._main",))
_import_without("structlog", ("rich",))
