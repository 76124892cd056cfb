#!/usr/bin/env bash
# Backs up a PostgreSQL database, restores the backup into a fresh database, and checks
# that every table has the same number of rows in both. Exits non-zero on any difference.
#
#   scripts/pg-backup-verify.sh SOURCE_URL [BACKUP_FILE]
#
# SOURCE_URL is a postgres:// URL. The scratch database is named <source>_restore_check and
# is dropped afterwards; keep the backup file (default: var/backups/<db>-<UTC time>.dump).
#
# The source may be in use: the dump and the source's row counts are taken from one
# snapshot (a transaction held open while pg_dump runs with --snapshot), so rows written
# meanwhile are in neither and the comparison stays exact.
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

# One "schema.table count" line per user table, sorted, counted exactly (not from the
# statistics), in a single statement so it can run inside the snapshot's transaction.
COUNTS_SQL="SELECT format('%s.%s %s', schemaname, tablename,
  (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I',
                                               schemaname, tablename), false, true, '')))[1]::text)
FROM pg_tables
WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname <> 'information_schema'
ORDER BY schemaname, tablename;"

psql "$admin_url" -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$scratch\"" \
  -c "CREATE DATABASE \"$scratch\""
cleanup() {
  psql "$admin_url" -q -c "DROP DATABASE IF EXISTS \"$scratch\"" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The snapshot: a session that exports it and stays in its transaction until the counts
# are read. Bash unsets SNAP and SNAP_PID as soon as it reaps the coprocess, so the
# script works on copies of its descriptors and pid.
coproc SNAP { psql "$src" -Atq -v ON_ERROR_STOP=1; }
snap_pid=$SNAP_PID
exec {snap_in}>&"${SNAP[1]}" {snap_out}<&"${SNAP[0]}"
exec {SNAP[1]}>&- {SNAP[0]}<&-
echo "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_export_snapshot();" >&"$snap_in"
read -r -t 30 snapshot <&"$snap_out" || { echo "could not export a snapshot of $db" >&2; exit 1; }

echo "backing up $db to $backup (snapshot $snapshot)"
pg_dump --format=custom --no-owner --snapshot="$snapshot" --dbname="$src" --file="$backup"

echo "$COUNTS_SQL" >&"$snap_in"
echo "SELECT '--end--';" >&"$snap_in"
before=""
while read -r -t 120 line <&"$snap_out"; do
  [ "$line" = "--end--" ] && break
  before+="$line"$'\n'
done
echo "COMMIT;" >&"$snap_in"
exec {snap_in}>&- {snap_out}<&-
wait "$snap_pid" || true

echo "restoring into $scratch"
pg_restore --no-owner --exit-on-error --dbname="$scratch_url" "$backup"
after=$(psql "$scratch_url" -Atq -v ON_ERROR_STOP=1 -c "$COUNTS_SQL")
before=${before%$'\n'}

if [ -z "$before" ] || [ "$before" != "$after" ]; then
  echo "row counts differ between $db and its restored copy:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
tables=$(echo "$before" | grep -c . || true)
rows=$(echo "$before" | awk '{s += $2} END {print s + 0}')
echo "verified: $tables tables, $rows rows, identical after restore ($backup)"
