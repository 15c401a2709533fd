"""The one cache of loaded models (llasa/model_cache.py)."""

from llasa.model_cache import load_once, unload_models


def test_a_model_loads_once_for_every_spelling_of_its_arguments(no_loaded_models):
    # Defaults left out or given, by position or keyword: one load. Other arguments load anew; unload_models forgets.
    calls = []

    @load_once
    def loader(name, device="cpu"):
        calls.append((name, device))
        return object()

    first = loader("m")
    assert loader("m", "cpu") is first and loader(name="m", device="cpu") is first
    assert loader("m", device="meta") is not first
    assert calls == [("m", "cpu"), ("m", "meta")]
    unload_models()
    assert loader("m") is not first and calls[-1] == ("m", "cpu") and len(calls) == 3
