"""The emulator's own settings (environment variables prefixed `EMULATOR_`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMULATOR_", extra="ignore", frozen=True)

    api_key: SecretStr = SecretStr("emulator-key")
    region: Literal["us", "eu"] = "us"
    # Fault injection and inspection endpoints (`/_emulator/...`): off unless asked for.
    test_mode: bool = False
    # Where uploads are kept; in sink mode they are only counted and hashed.
    data_dir: Path = Path(".data/emulator")
    upload_sink: bool = False
    max_upload_bytes: int = Field(2_200_000_000, ge=1)


@lru_cache
def get_emulator_settings() -> EmulatorSettings:
    return EmulatorSettings()
