#!/bin/sh
# Migrate, then serve. `worksession migrate` is idempotent (nothing to do at head), so
# every start may run it; start replicas one after another (compose.yaml does) so that
# two of them never migrate the same database at the same time.
#
# WORKERS: uvicorn worker processes. Several workers need Redis for the fan-out between
# them, so without WORKSESSION_REDIS_URL the default is one.
set -eu

if [ -n "${WORKSESSION_REDIS_URL:-}" ]; then
    default_workers=2
else
    default_workers=1
fi

worksession migrate
exec worksession serve --host 0.0.0.0 --port 8000 --workers "${WORKERS:-$default_workers}"
