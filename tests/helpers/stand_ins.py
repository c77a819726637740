"""Stand-ins for outside programs (model servers, ``tnr``) start under the real program's name.

``program`` writes ``bin/<name>``, a script that runs the stand-in: the kernel shows ``python .../bin/<name> ...``,
as for an installed console script. ``module`` makes ``python -m <package>.<module>`` a real module that runs it
(put the folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def _runner(script: Path) -> str:
    return f"import runpy\nrunpy.run_path({str(script)!r}, run_name='__main__')\n"


def program(bin_dir: Path, name: str, script: Path) -> Path:
    path = bin_dir / name
    if not path.exists():
        path.write_text(f"#!{sys.executable}\n{_runner(script)}")
        path.chmod(0o755)
    return path


def module(pkgs_dir: Path, dotted: str, script: Path) -> None:
    package, _, name = dotted.partition(".")
    folder = pkgs_dir / package
    folder.mkdir(exist_ok=True)
    (folder / "__init__.py").write_text("")
    (folder / f"{name}.py").write_text(_runner(script))
