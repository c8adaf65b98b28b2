#!/usr/bin/env bash
# Stages the text corpus of the language-model results (RESULTS.md) into .device/: the
# Python 3.11 standard library's sources (no tests, no idlelib/lib2to3), concatenated in
# byte order of their paths, about 10.7 MB. Deterministic: the same Debian package gives
# the same file (md5 of the text: 039cb2038173b21752c3335ec78f5c5b for 3.11.2-6+deb12u6).
set -eu
cd "$(dirname "$0")/.."
lib=${PYTHON_LIB:-/usr/lib/python3.11}
[ -d "$lib" ] || { echo "no $lib: install python3.11 or set PYTHON_LIB" >&2; exit 1; }
mkdir -p .device
(cd "$lib" && find . -name '*.py' -not -path './test/*' -not -path '*/tests/*' \
    -not -path './idlelib/*' -not -path './lib2to3/*' -not -path './dist-packages/*' \
    -not -path './site-packages/*' -not -path './config-*' | LC_ALL=C sort | xargs cat) \
    | gzip -9 -n > .device/python-stdlib.txt.gz
echo "corpus: $(gzip -dc .device/python-stdlib.txt.gz | wc -c) bytes, md5 $(gzip -dc .device/python-stdlib.txt.gz | md5sum | cut -d' ' -f1)"
