"""Loading a model ahead of need, in a background thread of this process.

A local run knows its model as soon as its config is read, but the runner asks for it only
once the pipeline is built and its workers are up (about a second later here). `preload`
starts `registry.load` then, so reading the weights and building the network overlap that
work; `load`, which a model handler calls instead of `registry.load`, takes the result of a
preload with the same arguments (waiting for it if needed), once, and loads as usual otherwise.
A preload is only worth it where the model is used in this process (an in-process runner);
threads of one worker process share the model, so one preload serves them all.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from matteflow.models import registry
from matteflow.models.registry import LoadedModel

__all__ = ["load", "preload"]

_Key = tuple[str, str, str, bool, tuple[str, ...], int]


class _Loading(threading.Thread):
    """One registry.load running in the background; `result` waits and returns or raises."""

    def __init__(self, key: _Key) -> None:
        super().__init__(name=f"matteflow-preload-{key[0]}", daemon=True)
        self._key = key
        self._model: LoadedModel | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        name, device, dtype, channels_last, allow_licences, threads = self._key
        try:
            self._model = registry.load(
                name,
                device,
                dtype,
                channels_last=channels_last,
                allow_licences=allow_licences,
                threads=threads,
            )
        except BaseException as err:  # handed to whoever takes the result
            self._error = err

    def result(self) -> LoadedModel:
        self.join()
        if self._error is not None:
            raise self._error
        assert self._model is not None
        return self._model


_pending: dict[_Key, _Loading] = {}
_lock = threading.Lock()


def preload(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    *,
    channels_last: bool = False,
    allow_licences: tuple[str, ...] = (),
    threads: int = 0,
) -> Callable[[], None]:
    """Start `registry.load` with these arguments in a background thread (unless one is
    pending already); returns a function that lets go of it when no `load` took it."""
    key: _Key = (name, device, dtype, channels_last, allow_licences, threads)
    with _lock:
        loading = _pending.get(key)
        if loading is None:
            loading = _pending[key] = _Loading(key)
            loading.start()
    return functools.partial(_forget, key, loading)


def _forget(key: _Key, loading: _Loading) -> None:
    with _lock:
        if _pending.get(key) is loading:
            del _pending[key]


def load(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    *,
    channels_last: bool = False,
    allow_licences: tuple[str, ...] = (),
    threads: int = 0,
) -> LoadedModel:
    """`registry.load(...)`, or the model a pending `preload` with the same arguments loads
    (its error, if it failed); a preload is taken once."""
    key: _Key = (name, device, dtype, channels_last, allow_licences, threads)
    with _lock:
        loading = _pending.pop(key, None)
    if loading is not None:
        return loading.result()
    return registry.load(
        name,
        device,
        dtype,
        channels_last=channels_last,
        allow_licences=allow_licences,
        threads=threads,
    )
