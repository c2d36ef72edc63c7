"""With a real ASSEMBLYAI_API_KEY the service talks to the real AssemblyAI, so the relay
secrets it stores are real: sealing them with the public development SECRETS_KEY protects
nothing. Outside production (where it refuses to start) it says so loudly at start-up."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.core.config import DEVELOPMENT_KEY, Settings
from app.main import create_app

REAL_KEY = SecretStr("a-real-looking-assemblyai-key-0123456789")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        str(getattr(r, "detail", ""))
        for r in caplog.records
        if r.levelname == "WARNING" and r.getMessage() == "app.secrets_key.public"
    ]


@pytest.mark.parametrize(
    "secrets_key",
    [None, DEVELOPMENT_KEY, f"{Fernet.generate_key().decode()},{DEVELOPMENT_KEY}"],
    ids=["unset", "development", "development-kept-to-open"],
)
def test_real_upstream_key_with_the_development_secrets_key_warns(
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    secrets_key: str | None,
) -> None:
    settings = make_settings(
        assemblyai_api_key=REAL_KEY,
        secrets_key=SecretStr(secrets_key) if secrets_key else None,
    )
    with caplog.at_level("WARNING"):
        create_app(settings, configure_logs=False)
    (line,) = _warnings(caplog)
    assert "SECRETS_KEY" in line
    assert "development" in line
    assert REAL_KEY.get_secret_value() not in caplog.text
    assert DEVELOPMENT_KEY not in caplog.text


@pytest.mark.parametrize(
    ("api_key", "secrets_key"),
    [
        (None, None),  # the emulator: no real secret exists
        (REAL_KEY, Fernet.generate_key().decode()),  # a real key of one's own
    ],
    ids=["emulator", "own-key"],
)
def test_no_warning_with_the_emulator_or_a_real_secrets_key(
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    api_key: SecretStr | None,
    secrets_key: str | None,
) -> None:
    settings = make_settings(
        assemblyai_api_key=api_key, secrets_key=SecretStr(secrets_key) if secrets_key else None
    )
    with caplog.at_level("WARNING"):
        create_app(settings, configure_logs=False)
    assert _warnings(caplog) == []


@pytest.mark.parametrize("blank", ["", " ", ",", " , "], ids=["empty", "space", "comma", "mixed"])
def test_a_blank_secrets_key_is_refused_in_production(
    make_settings: Callable[..., Settings], blank: str
) -> None:
    """`SECRETS_KEY=` (an empty variable, a compose file's unset `${SECRETS_KEY}`) holds no
    key: production must refuse it as it refuses an unset one, not fall back to the public
    development key."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="SECRETS_KEY is required"):
        make_settings(
            APP_ENV="production", assemblyai_api_key=REAL_KEY, secrets_key=SecretStr(blank)
        )
