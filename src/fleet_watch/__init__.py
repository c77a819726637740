"""Fleet Watch: one shared registry of what runs on this machine and what it holds, and one pre-flight
verdict (``fleet guard --json``) for agents and humans.

Public modules: ``registry`` (``connect()``), ``events`` (``verify_chain()``), ``service.fleet.Fleet``.
"""

__version__ = "0.4.0"
__all__ = ["__version__"]
