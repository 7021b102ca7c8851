"""The ``.env`` file of the working directory, read at start as the reference does.

Apart from :mod:`doraforwarder.config` (which exports it under its old name)
because every command reads it before anything else, ``version`` included,
and the configuration models are too heavy to import for that.
"""

from __future__ import annotations

import os
from pathlib import Path

from doraforwarder.errors import ConfigError

DOTENV_FILE = ".env"


def load_dotenv_file(cwd: Path | None = None) -> list[str]:
    """Set the variables of ``.env`` in the working directory that are not set already,
    as the reference does at start (godotenv); returns their names (never the values).

    A variable set in the environment, even to an empty string, always wins.
    """
    from dotenv import dotenv_values

    path = (cwd or Path.cwd()) / DOTENV_FILE
    if not path.is_file():
        return []
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    loaded = []
    for name, value in values.items():
        if name not in os.environ and value is not None:
            os.environ[name] = value
            loaded.append(name)
    return loaded
