#!/usr/bin/env bash
# Build the documentation site (guides + API reference) into build/site.
# Fails on: a public name without a docstring (scripts/check_docstrings.py), and any mkdocs
# warning (broken links or anchors, unresolved cross-references, docstrings that cannot be
# parsed). Needs the `docs` extra: pip install -e '.[docs]'.
# Usage: scripts/build_docs.sh [extra mkdocs build options, e.g. --site-dir DIR]
# PYTHON selects the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python}"
"$py" scripts/check_docstrings.py
exec "$py" -m mkdocs build --strict "$@"
