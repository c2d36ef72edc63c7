#!/bin/sh
# Migrate the database, then become the command (PID 1 gets the signals, not this shell).
set -eu
aai-proxy migrate
exec "$@"
