"""Every setting is documented: in `.env.example` (with a comment) and in the generated
table of docs/configuration.md, which must be up to date."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.config import Settings
from emulator.config import EmulatorSettings

ROOT = Path(__file__).resolve().parents[2]


def setting_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.append(alias if isinstance(alias, str) else name.upper())
    prefix = EmulatorSettings.model_config.get("env_prefix", "")
    names += [f"{prefix}{name}".upper() for name in EmulatorSettings.model_fields]
    return sorted(set(names))


def test_env_example_documents_every_setting() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    missing, uncommented = [], []
    for name in setting_names():
        pattern = re.compile(rf"^#?\s*{re.escape(name)}=")
        found = [i for i, line in enumerate(lines) if pattern.match(line)]
        if not found:
            missing.append(name)
        elif not any(
            i > 0 and lines[i - 1].startswith("#") and not pattern.match(lines[i - 1])
            for i in found
        ):
            uncommented.append(name)
    assert missing == [], f".env.example lacks: {', '.join(missing)}"
    assert uncommented == [], f".env.example has no comment line above: {uncommented}"


def test_configuration_doc_is_generated_and_current() -> None:
    from scripts.config_docs import render

    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == render(), "docs/configuration.md is stale: run python scripts/config_docs.py"
    rows = set(re.findall(r"^\|\s*`([A-Z0-9_]+)`\s*\|", current, re.M))
    missing = [name for name in setting_names() if name not in rows]
    assert missing == [], f"docs/configuration.md lacks rows for: {', '.join(missing)}"
