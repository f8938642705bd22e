"""The malloc arena cap is best effort: where there is no glibc it says so and changes nothing."""

import ctypes
import ctypes.util
import gc
import platform

import pytest

from shared import memory


def test_glibc_takes_the_arena_cap() -> None:
    assert memory.limit_malloc_arenas(2) is (platform.libc_ver()[0] == "glibc")


def test_start_up_objects_are_frozen_out_of_collections() -> None:
    built_at_start_up = {"tags": ["a", "b"]}
    try:
        memory.settle_startup_objects()
        assert not any(o is built_at_start_up for o in gc.get_objects()), "collections skip it"
    finally:
        gc.unfreeze()
    assert any(o is built_at_start_up for o in gc.get_objects())


def test_no_c_library_found_means_no_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert memory.limit_malloc_arenas() is False


def test_a_c_library_that_cannot_load_means_no_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    def unloadable(name: str) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", unloadable)
    assert memory.limit_malloc_arenas() is False


class _LibcWithoutMallopt:
    """A C library, such as musl's, with no mallopt to call."""

    def __getattr__(self, name: str) -> object:
        raise AttributeError(name)


def test_a_c_library_without_mallopt_means_no_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes, "CDLL", lambda name: _LibcWithoutMallopt())
    assert memory.limit_malloc_arenas() is False
