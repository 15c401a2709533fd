"""What counts as a number in an option or a JSON value: Python's bool is an int, and a flag or config that says
`true` where a number belongs is an error, not 1."""

import math


def is_number(value) -> bool:
    """A finite int or float, and not a bool (True is an int to Python): what a numeric option may hold."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value) -> bool:
    """An integer (numpy's too), and not a bool."""
    return not isinstance(value, bool) and hasattr(value, "__index__")
