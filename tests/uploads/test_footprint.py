"""The serving process keeps out what it never uses, so an upload's peak RSS stays under
the benchmark's 100 MB (bench/upload_throughput.py): each of these is megabytes resident."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.live import ROOT

KEPT_OUT = {
    "alembic": "migrations run from the CLI; /readyz reads the heads without it",
    "jwt": "imported when a JWT verifier is built (tests/sessions verify tokens)",
    "cryptography": "PyJWT's, for RS256/ES256",
    "rich": "httpx's CLI and structlog's pretty tracebacks",
    "pygments": "rich's",
    "httpx._main": "httpx's CLI",
    "streaming_form_data": "imported with the first multipart body",
    "smart_open": "streaming-form-data's",
    "numpy": "the emulator's",
    "emulator": "a separate process",
}

CODE = """
import json, sys
import uvicorn.main  # what `python -m uvicorn` loads before the app
import app.main
app.main.create_app()
print(json.dumps(sorted(sys.modules)))
"""


def serving_modules() -> set[str]:
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    out = subprocess.run(
        [sys.executable, "-c", CODE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_serving_process_keeps_unused_libraries_out() -> None:
    loaded = serving_modules()
    assert "app.uploads.router" in loaded  # the app really was built
    assert {name: why for name, why in KEPT_OUT.items() if name in loaded} == {}


def test_the_form_parser_still_loads_for_a_form() -> None:
    code = (
        "import sys, app.uploads.streaming as s\n"
        "async def r(): return {'type': 'http.request', 'body': b'', 'more_body': False}\n"
        "h = {'content-type': 'multipart/form-data; boundary=b'}\n"
        "s.MultipartBody(r, h, limit=1, chunk_size=1)\n"
        "print('streaming_form_data' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
