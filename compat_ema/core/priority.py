"""Hook priorities, shared by the mmcv 1.x and mmengine generations.

Reproduces ``mmcv.runner.priority.Priority`` / ``get_priority`` and their
mmengine twins (``mmengine.hooks.priority``): the same enum values and the same
rules (an int in [0, 100], a member, or a member name in any letter case).
Lower numbers run first; hooks of equal priority keep registration order.
"""
from __future__ import annotations

from enum import Enum
from typing import Union


class Priority(Enum):
    """Hook priority levels (``mmcv.runner.Priority`` / ``mmengine.hooks.Priority``)."""

    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100


def get_priority(priority: Union[int, str, Priority]) -> int:
    """Return the numeric priority, as ``mmcv.runner.get_priority`` does.

    Raises ValueError for an int outside [0, 100], KeyError for an unknown name
    and TypeError for any other type (a float included), like upstream.
    """
    if isinstance(priority, bool):  # bool is an int subclass; upstream accepts it as 0/1
        priority = int(priority)
    if isinstance(priority, int):
        if priority < 0 or priority > 100:
            raise ValueError(f'priority must be between 0 and 100, but got {priority}')
        return priority
    if isinstance(priority, Priority):
        return priority.value
    if isinstance(priority, str):
        return Priority[priority.upper()].value
    raise TypeError(
        f'priority must be an integer, a str or a Priority enum value, but got {type(priority).__name__}')
