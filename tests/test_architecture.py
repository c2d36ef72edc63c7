"""The import graph keeps its shape: a test over `ast`, no tool to install.

Packages of `app/` are nodes; an edge A -> B means a module of A imports one of B (at any
depth, lazy and `TYPE_CHECKING` imports included: they are dependencies all the same).

- `core` is the floor: it imports no other package of ours.
- `upstream` (the AssemblyAI client) and `identity` (who is calling) stand on `core` alone;
  `audit` (what they did) on those two.
- Features (`uploads`, `transcripts`, `webhooks`, `llm`, ...) never import the top of the
  app (`main`, `cli`, `worker`, `models`), and their imports form no cycle.
- No `try: import ... except ImportError` around our own modules: a missing module of ours
  is a bug to see, not a feature to switch off.
- `emulator/` is a separate program: it imports nothing from `app/`.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
EMULATOR = ROOT / "emulator"

FLOOR = "core"
# The floors above core that every feature may stand on, and all they may import.
LOWER_FLOORS = {
    "metrics": {"core"},  # counters every floor and feature may record into
    "upstream": {"core", "metrics"},  # the AssemblyAI client: infrastructure
    "identity": {"core"},  # who is calling
    "audit": {"core", "identity"},  # what they did
}
# Modules at the top of the app: they wire the features together; no feature imports them.
TOP = {"main", "cli", "worker", "models"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported(path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """Absolute names of the modules `node` imports (relative imports resolved)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        package = _module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        base = package[: len(package) - node.level + 1]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        module = node.module or ""
    names_only = False
    for alias in node.names:  # `from app.x import y` imports the module app.x.y if y is one
        name = f"{module}.{alias.name}"
        path_of = ROOT.joinpath(*name.split("."))
        if path_of.is_dir() or path_of.with_suffix(".py").is_file():
            yield name
        else:
            names_only = True
    if names_only:
        yield module


def _package(module: str) -> str | None:
    """The app package (first level below `app`) a module name belongs to."""
    parts = module.split(".")
    if parts[0] != "app" or len(parts) < 2:
        return None
    name = parts[1]
    if (APP / name).is_dir() or (APP / f"{name}.py").is_file():
        return name
    return None


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if ".venv" not in p.parts)


def _imports(folder: Path) -> Iterator[tuple[Path, ast.Import | ast.ImportFrom]]:
    for path in _sources(folder):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield path, node


def package_edges() -> dict[tuple[str, str], set[str]]:
    """(importer package, imported package) -> the importing modules, for app/."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path, node in _imports(APP):
        source = _package(_module_name(path))
        if source is None:  # app/__init__.py
            continue
        for module in _imported(path, node):
            target = _package(module)
            if target is not None and target != source:
                edges[(source, target)].add(f"{_module_name(path)} -> {module}")
    return edges


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
        graph[b]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(edges: dict[tuple[str, str], set[str]], pairs: list[tuple[str, str]]) -> str:
    return "\n".join(f"  {line}" for pair in pairs for line in sorted(edges[pair]))


def test_the_helpers_see_a_cycle() -> None:
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert _cycles({("a", "b"), ("b", "c")}) == []


def test_no_cycles_between_app_packages() -> None:
    edges = package_edges()
    cycles = _cycles(set(edges))
    detail = [
        f"{' <-> '.join(c)}:\n" + _describe(edges, [p for p in edges if p[0] in c and p[1] in c])
        for c in cycles
    ]
    assert not cycles, "import cycles between app packages:\n" + "\n".join(detail)


def module_edges() -> set[tuple[str, str]]:
    """(importer, imported) between modules of app/ (a package stands for its __init__)."""
    edges = set()
    for path, node in _imports(APP):
        source = _module_name(path)
        for module in _imported(path, node):
            where = ROOT.joinpath(*module.split("."))
            is_ours = where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()
            if module.split(".")[0] == "app" and is_ours and module != source:
                edges.add((source, module))
    return edges


def test_no_cycles_between_modules() -> None:
    """Within a package too (lazy imports included): e.g. uploads.form and
    uploads.streaming once imported each other."""
    cycles = _cycles(module_edges())
    assert not cycles, f"import cycles between modules: {cycles}"


def test_core_imports_no_other_package() -> None:
    edges = package_edges()
    wrong = [pair for pair in edges if pair[0] == FLOOR]
    assert not wrong, "app/core imports other packages:\n" + _describe(edges, wrong)


def test_lower_floors_import_only_below_them() -> None:
    edges = package_edges()
    wrong = [pair for pair in edges if pair[1] not in LOWER_FLOORS.get(pair[0], {pair[1]})]
    assert not wrong, "a lower floor imports above itself:\n" + _describe(edges, wrong)


def test_features_do_not_import_the_top_of_the_app() -> None:
    edges = package_edges()
    wrong = [pair for pair in edges if pair[1] in TOP and pair[0] not in TOP]
    assert not wrong, "features import the app's top modules:\n" + _describe(edges, wrong)


def _guarded_imports(folder: Path, ours: tuple[str, ...]) -> list[str]:
    found = []
    for path in _sources(folder):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Try):
                continue
            catches = {
                ast.unparse(handler.type) for handler in node.handlers if handler.type is not None
            }
            if not any("ImportError" in c or "ModuleNotFoundError" in c for c in catches):
                continue
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, ast.Import | ast.ImportFrom):
                        modules = list(_imported(path, sub))
                        if any(m.split(".")[0] in ours for m in modules):
                            found.append(f"{_module_name(path)}:{sub.lineno} {modules[0]}")
    return found


def test_no_import_error_fallbacks_between_our_modules() -> None:
    found = _guarded_imports(APP, ("app", "emulator"))
    assert not found, "ImportError fallbacks around our own modules:\n" + "\n".join(found)


def test_emulator_imports_nothing_from_app() -> None:
    found = sorted(
        {
            f"{_module_name(path)}:{node.lineno}"
            for path, node in _imports(EMULATOR)
            for module in _imported(path, node)
            if module == "app" or module.startswith("app.")
        }
    )
    assert not found, "the emulator imports the app:\n" + "\n".join(found)


def test_app_runs_without_the_emulator_extra() -> None:
    """numpy and the recogniser belong to the `emulator`/`recognition` extras: app/ imports
    neither, and reaches the emulator only from the command line that starts it."""
    found = sorted(
        {
            f"{_module_name(path)}:{node.lineno} {module}"
            for path, node in _imports(APP)
            for module in _imported(path, node)
            if module.split(".")[0] in {"numpy", "pocketsphinx"}
            or (module.split(".")[0] == "emulator" and _module_name(path) != "app.cli")
        }
    )
    assert not found, "app/ needs the emulator's dependencies:\n" + "\n".join(found)
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    main = " ".join(project["dependencies"])
    assert "numpy" not in main
    assert "pocketsphinx" not in main
    assert any(d.startswith("numpy==") for d in project["optional-dependencies"]["emulator"])


# Modules that own the whole settings: they read them (config) or compose the app from them.
WHOLE_SETTINGS = {"app/main.py", "app/cli.py", "app/worker.py", "app/core/config.py"}
WHOLE_SETTINGS_NAMES = {"Settings", "SettingsDep"}


def _names_whole_settings(annotation: ast.expr | None) -> bool:
    """The annotation mentions the whole `Settings` (`Settings | None`, `"Settings"`,
    `config.Settings`, `Annotated[Settings, ...]` included)."""
    if annotation is None:
        return False
    for node in ast.walk(annotation):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _names_whole_settings(ast.parse(node.value, mode="eval").body):
                return True
        elif isinstance(node, ast.Name) and node.id in WHOLE_SETTINGS_NAMES:
            return True
        elif isinstance(node, ast.Attribute) and node.attr in WHOLE_SETTINGS_NAMES:
            return True
    return False


def whole_settings_annotations(source: str, where: str) -> list[str]:
    """Parameters, attributes and variables of `source` annotated with the whole settings."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
            found += [
                f"{where}:{p.lineno} parameter {p.arg}"
                for p in params
                if p is not None and _names_whole_settings(p.annotation)
            ]
        elif isinstance(node, ast.AnnAssign) and _names_whole_settings(node.annotation):
            found.append(f"{where}:{node.lineno} {ast.unparse(node.target)}")
    return found


def test_the_helper_sees_whole_settings_annotations() -> None:
    source = """
class Holder:
    settings: Settings
    part: LlmSettings

    def __init__(self, s: "Settings | None", *, other: config.Settings) -> None:
        self.kept: Annotated[Settings, Depends(x)] = s

def route(settings: SettingsDep, llm: LlmSettingsDep, web: WebSettings) -> None: ...
"""
    assert sorted(whole_settings_annotations(source, "m.py")) == [
        "m.py:3 settings",
        "m.py:6 parameter other",
        "m.py:6 parameter s",
        "m.py:7 self.kept",
        "m.py:9 parameter settings",
    ]


def test_features_receive_their_part_of_the_settings_not_the_whole() -> None:
    """Each feature (and core, but for config) is given its own part (`settings.llm`,
    `settings.transcripts`, ...: app/core/config.py); only the top of the app, which owns
    the whole `Settings`, passes it around."""
    found = [
        line
        for path in _sources(APP)
        if (where := path.relative_to(ROOT).as_posix()) not in WHOLE_SETTINGS
        for line in whole_settings_annotations(path.read_text(), where)
    ]
    assert not found, "the whole Settings outside the app's top:\n" + "\n".join(found)


# Imports inside functions that may load a module the running app has not loaded yet, and
# why that is right there. Any other such import would run on first use, on a request's or
# a session's path, and hold the event loop while it loads (importing redis there once
# stalled every open relay session for ~0.3 s).
LAZY_IMPORTS = {
    "app.cli": "the command line: each command loads what it needs",
    "app.worker:run_worker": "start-up of `aai-proxy worker`",
    "app.identity.jwt:__init__": "start-up, only when JWT sign-in is configured",
    "app.relay.state:__init__": "start-up, only when REDIS_URL is set",
    "app.core.secretbox:__init__": "cryptography (several MB) only where a secret is sealed; "
    "~25 ms once",
    "app.core.embedded_postgres": "the command line's embedded Postgres",
    "app.core.db:start_embedded_postgres": "the command line's embedded Postgres",
    "app.core.migrate": "migrations: start-up and the command line",
    "app.metrics.router:serve_process_metrics": "start-up of the metrics port",
    "app.uploads.streaming:__init__": "the multipart parser (~2 MB), imported off the event "
    "loop by open_body (app/uploads/body.py) before the first form is parsed",
}


def _function_imports() -> Iterator[tuple[str, str, int, str]]:
    """(module, function, line, imported module) for every import inside a function."""
    for path in _sources(APP):
        for fn in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    for module in _imported(path, node):
                        yield _module_name(path), fn.name, node.lineno, module


def test_no_first_use_imports_on_request_paths() -> None:
    """Every module imported inside a function is loaded once the app is made (so the
    import is a dictionary lookup), unless the function is listed in LAZY_IMPORTS."""
    script = (
        "import sys\n"
        "from app.main import create_app\n"
        "create_app(configure_logs=False)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:9/none",  # never connected
    }
    env.pop("REDIS_URL", None)
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
    )
    late = sorted(
        f"{module}:{line} {function}() imports {imported}"
        for module, function, line, imported in _function_imports()
        if imported not in loaded
        and module not in LAZY_IMPORTS
        and f"{module}:{function}" not in LAZY_IMPORTS
    )
    assert not late, (
        "imported on first use, after start-up (import it at the top of the module, or "
        "list the function in LAZY_IMPORTS with the reason):\n" + "\n".join(late)
    )
