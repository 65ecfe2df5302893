#!/usr/bin/env bash
# Build the documentation site (guides + API reference) into build/site.
# Warnings fail the build: broken links, unresolved cross-references, docstrings that
# cannot be parsed. Needs the `docs` extra: pip install -e '.[docs]'.
# Usage: scripts/build_docs.sh [extra mkdocs build options, e.g. --site-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m mkdocs build --strict "$@"
