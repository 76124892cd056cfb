#!/usr/bin/env bash
# Starts this machine's PostgreSQL and Redis when they are not answering; the tests need both.
set -euo pipefail

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_ready; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! redis_ready; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 30); do
  if pg_ready && redis_ready; then
    # The settings' own database (the tests make test_<name> beside it).
    psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'inkmarket'" \
      | grep -q 1 || createdb -h 127.0.0.1 -U postgres inkmarket
    exit 0
  fi
  sleep 1
done
echo "PostgreSQL or Redis did not come up" >&2
exit 1
