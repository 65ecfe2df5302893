"""``python -m jaxbuf``: the jaxbuf command line (see :mod:`jaxbuf.cli`)."""

from jaxbuf.cli import main

raise SystemExit(main())
