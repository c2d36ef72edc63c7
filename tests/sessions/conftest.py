from tests.tokens.conftest import (  # noqa: F401 — the same started-app fixtures
    audit_rows,
    client,
    committed_key,
    fake_upstream,
    make_app,
    token_app,
)
