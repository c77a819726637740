"""Repo path relations: compared on components, as ``PurePosixPath.parts`` would (the rule that the string
comparison in ``core.paths`` stands in for)."""

from __future__ import annotations

import itertools
from pathlib import PurePosixPath

from fleet_watch.core.paths import covers, overlaps

PATHS = ["/", "/a", "/a/", "/a/b", "/a/b/", "/a/bc", "/ab", "/a/b/c", "/a/b/c/d", "/b", "/a/b c", "/a/b.c"]


def _by_parts(lock: str, path: str) -> bool:
    lock_parts, path_parts = PurePosixPath(lock).parts, PurePosixPath(path).parts
    return path_parts[: len(lock_parts)] == lock_parts


def test_covers_agrees_with_path_components() -> None:
    for lock, path in itertools.product(PATHS, repeat=2):
        assert covers(lock, path) == _by_parts(lock, path), (lock, path)


def test_a_sibling_with_a_common_prefix_is_not_covered() -> None:
    assert not covers("/work/repo", "/work/repo2")
    assert not overlaps("/work/repo", "/work/repo2")
    assert overlaps("/work/repo/src", "/work/repo")
    assert covers("/", "/work/repo")
