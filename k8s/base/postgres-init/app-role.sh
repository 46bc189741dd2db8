#!/bin/bash
# Run by the postgres image's entrypoint once, when it initialises an empty data volume
# (/docker-entrypoint-initdb.d, mounted executable: run, not sourced), while the server listens
# on its unix socket only; connects as the superuser POSTGRES_USER. Creates MLflow's application
# role, which is NOT a superuser and may not create databases or roles, and the two databases it
# owns (runs; MLflow's users and permissions). Names come from ConfigMap mlflow-server, the
# password from Secret mlflow-db.
# psql quotes the values itself (:"identifier", :'literal'), so no character needs escaping.
# Later password changes need `ALTER ROLE` inside the database (k8s/README.md).
set -euo pipefail
: "${MLFLOW_DB_USER:?}" "${MLFLOW_DB_NAME:?}" "${MLFLOW_AUTH_DB_NAME:?}" "${MLFLOW_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v app_user="$MLFLOW_DB_USER" -v app_password="$MLFLOW_DB_PASSWORD" \
  -v app_db="$MLFLOW_DB_NAME" -v auth_db="$MLFLOW_AUTH_DB_NAME" <<'SQL'
CREATE ROLE :"app_user" WITH LOGIN PASSWORD :'app_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE :"app_db" OWNER :"app_user";
CREATE DATABASE :"auth_db" OWNER :"app_user";
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"auth_db" FROM PUBLIC;
SQL
