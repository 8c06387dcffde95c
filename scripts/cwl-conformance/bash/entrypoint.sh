#!/bin/bash
# As the bash image's entry point: an option, or nothing at all, or a bash builtin is
# given to bash; anything else runs as the command it names.
set -eu
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ] || bash -c "help -- $1" >/dev/null 2>&1; then
  exec bash "$@"
fi
exec "$@"
