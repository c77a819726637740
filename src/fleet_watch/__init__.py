"""Fleet Watch: one shared registry of what runs on this machine and what it holds, and one pre-flight
verdict (``fleet guard --json``) for agents and humans.

Public modules: ``registry`` (``connect()``), ``events`` (``verify_chain()``), ``service.fleet.Fleet``.
The version has one source, ``pyproject.toml``; ``fleet_watch.__version__`` reads it from the installed
distribution's metadata, lazily (importlib.metadata costs ~35 ms, which the guard path must not pay).
"""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fleet-watch")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
