#!/usr/bin/env bash
# Start the machine's PostgreSQL 15 and create the tests' role and database (idempotent).
# Used by .ci/run; run it by hand (as root) before `make test` to run the Postgres tests locally.
set -euo pipefail
password="${CDP_TEST_POSTGRES_PASSWORD:-cdp}"

if ! command -v pg_ctlcluster >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi
if ! pg_lsclusters -h | grep -q '^15 *main'; then
  pg_createcluster 15 main >/dev/null
fi
pg_lsclusters -h | grep -q '^15 *main .* online' || pg_ctlcluster 15 main start
for _ in $(seq 50); do
  runuser -u postgres -- pg_isready -q && break
  sleep 0.2
done

psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'cdp'")" != "1" ]; then
  psql_admin -c "CREATE ROLE cdp LOGIN"
fi
psql_admin -v password="$password" <<'SQL'
ALTER ROLE cdp PASSWORD :'password';
SQL
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'cdp_test'")" != "1" ]; then
  runuser -u postgres -- createdb -O cdp cdp_test
fi
echo "postgres: cdp_test ready on 127.0.0.1:5432 (role cdp)"
