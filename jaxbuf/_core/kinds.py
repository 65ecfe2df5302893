"""The ``Vector*`` names: one class per buffer kind, with ``buffer_num`` a ``create`` option.

Tianshou has a class per kind and per layout (``ReplayBuffer`` and ``VectorReplayBuffer``).
In jaxbuf the number of sub-buffers is static configuration of one class, so a jitted
function always hands back the class it was given. The ``Vector*`` names stay, for code
written against them: each is a :class:`VectorKind` whose ``create`` takes Tianshou's
``(total_size, buffer_num)`` and returns an instance of the kind, and for which
``isinstance(buf, VectorReplayBuffer)`` means "a ``ReplayBuffer`` with more than one
sub-buffer".
"""

from __future__ import annotations

from typing import Any


class VectorKind(type):
    """Metaclass of a ``Vector*`` name (see the module docstring).

    The class body sets ``kind`` (the buffer class) and ``create``. Calling the name
    constructs the kind; other attributes are the kind's.
    """

    kind: type

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls.kind) and obj.buffer_num > 1

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.kind(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        return getattr(cls.kind, name)
