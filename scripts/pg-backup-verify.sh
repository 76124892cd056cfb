#!/usr/bin/env bash
# Backs up a PostgreSQL database, restores the backup into a fresh database, and checks
# that every table has the same number of rows in both. Exits non-zero on any difference.
#
#   scripts/pg-backup-verify.sh SOURCE_URL [BACKUP_FILE]
#
# SOURCE_URL is a postgres:// URL. The scratch database is named <source>_restore_check and
# is dropped afterwards; keep the backup file (default: var/backups/<db>-<UTC time>.dump).
set -euo pipefail
export PGOPTIONS="--client-min-messages=warning"

src=${1:?usage: pg-backup-verify.sh SOURCE_URL [BACKUP_FILE]}
db=$(python3 -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).path.lstrip("/"))' "$src")
[ -n "$db" ] || { echo "no database name in $src" >&2; exit 2; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
backup=${2:-var/backups/$db-$stamp.dump}
mkdir -p "$(dirname "$backup")"
scratch="${db}_restore_check"
scratch_url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$src" "$scratch")
admin_url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/postgres")))' "$src")

counts() {
  # One "table count" line per user table, sorted, counted exactly (not from statistics).
  psql "$1" -Atq -v ON_ERROR_STOP=1 <<'SQL'
CREATE TEMP TABLE _counts(name text, n bigint);
DO $$
DECLARE t record; c bigint;
BEGIN
  FOR t IN SELECT schemaname, tablename FROM pg_tables
           WHERE schemaname NOT LIKE 'pg\_%' AND schemaname <> 'information_schema' LOOP
    EXECUTE format('SELECT count(*) FROM %I.%I', t.schemaname, t.tablename) INTO c;
    INSERT INTO _counts VALUES (t.schemaname || '.' || t.tablename, c);
  END LOOP;
END $$;
SELECT name || ' ' || n FROM _counts ORDER BY name;
SQL
}

echo "backing up $db to $backup"
pg_dump --format=custom --no-owner --dbname="$src" --file="$backup"

psql "$admin_url" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$scratch\"" \
  -c "CREATE DATABASE \"$scratch\""
trap 'psql "$admin_url" -q -c "DROP DATABASE IF EXISTS \"$scratch\"" >/dev/null 2>&1 || true' EXIT

echo "restoring into $scratch"
pg_restore --no-owner --exit-on-error --dbname="$scratch_url" "$backup"

before=$(counts "$src")
after=$(counts "$scratch_url")
if [ "$before" != "$after" ]; then
  echo "row counts differ between $db and its restored copy:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
tables=$(echo "$before" | grep -c . || true)
rows=$(echo "$before" | awk '{s += $2} END {print s + 0}')
echo "verified: $tables tables, $rows rows, identical after restore ($backup)"
