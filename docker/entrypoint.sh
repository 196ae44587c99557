#!/bin/sh
# Container entry point: prepare the external services (migrations, logins, raw topic) with
# `cryptoflow setup`, mark the container ready for its health check, then run the command.
set -eu
rm -f /tmp/cryptoflow-ready
cryptoflow setup
touch /tmp/cryptoflow-ready
exec cryptoflow "$@"
