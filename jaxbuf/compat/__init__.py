"""Compatibility layers for code written against other replay-buffer libraries.

* :mod:`jaxbuf.compat.tianshou`: Tianshou's buffer classes (names, constructors, mutable
  ``add``/``sample``) over jaxbuf's pure buffers, for eager Python loops.
"""

from jaxbuf.compat import tianshou

__all__ = ["tianshou"]
