"""The local team server (PostgreSQL + MLflow with basic auth, optionally an S3 API): `python src/team_server.py start
[--s3]`, `add-user NAME`, `status`, `restart-mlflow`, `stop` (catdog.team.server says what each does)."""

from catdog.common.console import quiet_console
from catdog.team.cli import main

if __name__ == "__main__":
    quiet_console()
    main()
