"""Every setting is documented: in `.env.example` (with a comment) and in README's table."""

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


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\|\s*`([A-Z0-9_]+)`\s*\|", section, re.M))
    missing = [name for name in setting_names() if name not in rows]
    assert missing == [], f"README ## Configuration lacks rows for: {', '.join(missing)}"
