"""Create, or re-password, the MLflow user that pipeline pods log in as; run before the server starts.

The init container of the MLflow pod runs it (``python /etc/mlflow-users/ensure_pipeline_user.py``)
with the server's own auth settings (MLFLOW_AUTH_CONFIG_PATH, PGPASSWORD) and the pipeline's
credentials from Secret ``autophagy-tracking-credentials`` (MLFLOW_TRACKING_USERNAME/PASSWORD).
The user is never an admin: it may create experiments (and gets MANAGE on those), read the others
(``default_permission``), and cannot manage users or other users' permissions. Every start sets
the password from the Secret again, so rotating it is: change the Secret, restart the pod.
"""

import os
import sys

from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore


def main() -> int:
    username = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    config = read_auth_config()
    if not username or not password:
        print(
            "ensure_pipeline_user: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD must be set "
            "(Secret autophagy-tracking-credentials)",
            file=sys.stderr,
        )
        return 1
    if username == config.admin_username:
        print(f"ensure_pipeline_user: the pipeline user must not be the admin user {username!r}", file=sys.stderr)
        return 1
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)
    if store.has_user(username, use_primary=True):
        store.update_user(username, password=password, is_admin=False)
        print(f"ensure_pipeline_user: updated the password of {username!r} (not an admin)")
    else:
        store.create_user(username, password, is_admin=False)
        print(f"ensure_pipeline_user: created {username!r} (not an admin)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
