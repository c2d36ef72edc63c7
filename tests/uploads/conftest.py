from tests.transcripts.harness import (  # noqa: F401 — fixtures
    committed,
    emu,
    jobs,
    jobs_settings,
    new_key,
    start_app,
)
