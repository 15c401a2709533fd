"""Matplotlib for files: every plot the project draws is written to a PNG, never shown."""


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt
