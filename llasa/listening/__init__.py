"""Listening tests: pairs of clips from the project's outputs, the preference store, results and learned rewards."""
