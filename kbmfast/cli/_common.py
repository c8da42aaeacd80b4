"""What several commands share beyond kbmfast._outputs (the output helpers): the key file."""

from __future__ import annotations

from typing import Any

from .._outputs import CliError, os_error_text


def load_key_file(path: str, status: int = 2) -> Any:
    """The key table, or CliError (``status``) naming the file and the cause."""
    import kbmfast

    try:
        return kbmfast.KeyTable.load(path)
    except kbmfast.KeyFileError as e:
        raise CliError(str(e), status) from None
    except OSError as e:
        raise CliError(f"key file {os_error_text(e, path)}", status) from None
