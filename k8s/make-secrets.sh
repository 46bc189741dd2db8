#!/usr/bin/env bash
# Writes the credential files that the secretGenerators under k8s/ read, with random values.
# They are git-ignored (k8s/.gitignore: *.env) and never committed; an existing file is never
# overwritten (delete it to rotate, then see k8s/README.md: PostgreSQL keeps a password it was
# initialised with). Run it once before the first `kubectl apply -k`, from anywhere:
#
#   k8s/make-secrets.sh                       # base, overlays/gpu, run-namespace
#   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... k8s/make-secrets.sh   # + overlays/s3's bucket keys
#
# Files (mode 600):
#   base/postgres-superuser.env                 password=               PostgreSQL superuser `postgres`
#   base/mlflow-db.env                          password=               MLflow's database role (not a superuser)
#   base/mlflow-auth.env                        admin-password=         MLflow user `admin`
#                                               flask-secret-key=       MLflow basic-auth CSRF key
#   components/pipeline-access/tracking-credentials.env
#                                               MLFLOW_TRACKING_USERNAME=autophagy-pipeline
#                                               MLFLOW_TRACKING_PASSWORD=   the pipeline's MLflow user
#   overlays/s3/s3-credentials.env              AWS_ACCESS_KEY_ID=, AWS_SECRET_ACCESS_KEY= (from the
#                                               environment only: keys of your bucket cannot be made up)
set -euo pipefail
umask 077
DIR=$(cd "$(dirname "$0")" && pwd)

random() {  # 32 random bytes, hex (no character that needs quoting anywhere)
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex 32
  else
    python3 -c 'import secrets; print(secrets.token_hex(32))'
  fi
}

write() {  # write FILE LINE...: create FILE with the lines unless it exists
  local file="$DIR/$1"
  shift
  if [ -e "$file" ]; then
    echo "make-secrets: kept $file (exists)"
    return
  fi
  printf '%s\n' "$@" >"$file.tmp"
  mv "$file.tmp" "$file"
  echo "make-secrets: wrote $file"
}

write base/postgres-superuser.env "password=$(random)"
write base/mlflow-db.env "password=$(random)"
write base/mlflow-auth.env "admin-password=$(random)" "flask-secret-key=$(random)"
write components/pipeline-access/tracking-credentials.env \
  "MLFLOW_TRACKING_USERNAME=autophagy-pipeline" "MLFLOW_TRACKING_PASSWORD=$(random)"
if [ -n "${AWS_ACCESS_KEY_ID:-}" ] && [ -n "${AWS_SECRET_ACCESS_KEY:-}" ]; then
  write overlays/s3/s3-credentials.env \
    "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
elif [ ! -e "$DIR/overlays/s3/s3-credentials.env" ]; then
  echo "make-secrets: skipped overlays/s3/s3-credentials.env (set AWS_ACCESS_KEY_ID and" \
    "AWS_SECRET_ACCESS_KEY to your bucket's keys and run again; only overlays/s3 needs it)"
fi
