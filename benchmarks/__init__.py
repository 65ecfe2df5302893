"""Benchmarks of jaxbuf against flashbax, Tianshou and rlax (issue 7); not part of the package."""
