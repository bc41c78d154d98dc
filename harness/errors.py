"""The one error type a user can cause; the CLI prints it as one line and exits 2."""


class HarnessError(Exception):
    """A mistake in the user's input (config, path, unsupported choice): never a bug."""

    exit_code = 2


def config_error(path: object, key: str, message: str) -> HarnessError:
    """`FILE: KEY: what is wrong and what is allowed`."""
    where = f"{path}: {key}" if key else f"{path}"
    return HarnessError(f"{where}: {message}")
