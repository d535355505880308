#!/bin/bash
# The nova series (patches/nova/) applies to Debian 12's python3-nova and
# nova's unit tests of what it touches pass, its own new tests included.
# Takes about two and a half minutes (scripts/nova-tests.sh, make nova-tests).
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
exec "$TOP/scripts/nova-tests.sh"
