"""The models a process loads once (codec, ASR, scorers, judges): one cache for all of them, emptied at once."""

import functools
import inspect

# (loader, its arguments) -> what it loaded
_LOADED: dict[tuple, object] = {}


def load_once(loader):
    """`loader` run once per process for each set of arguments (defaults filled in, so that every spelling of a call
    shares one model); `unload_models` forgets what it loaded. Give it resolved arguments ("cuda:0", not "auto")."""
    signature = inspect.signature(loader)

    @functools.wraps(loader)
    def loaded(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        key = (loader.__module__, loader.__qualname__, *call.arguments.values())
        if key not in _LOADED:
            _LOADED[key] = loader(*args, **kwargs)
        return _LOADED[key]

    return loaded


def unload_models() -> None:
    """Forget every model `load_once` loaded: its memory is freed once nothing else holds it."""
    _LOADED.clear()
