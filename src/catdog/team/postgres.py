"""A PostgreSQL cluster in a folder of its own, from Debian's `postgresql` package: created with initdb, listening on
127.0.0.1 only at a free port (no Unix socket outside the folder), with a generated password for its `postgres`
role (scram-sha-256: no other user of the machine gets in), started and stopped with pg_ctl; an application connects
as a role of its own that owns its databases and nothing else. Every password lives in a 0600 file beside the
cluster's folder, never on a command line. PostgreSQL refuses to run as root, so as root it runs as the `postgres`
user the package creates."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from catdog.team.loopback import ServerStartError, free_port, generated_secret, write_private

INSTALL = "install Debian's `postgresql` package (`apt-get install postgresql`; .ci/run does)"


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian keeps them off PATH, in /usr/lib/postgresql/<v>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise FileNotFoundError(f"PostgreSQL's pg_ctl not found; {INSTALL}")


class Cluster:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.port_file = data.parent / f"{data.name}.port"
        self.password_file = data.parent / f"{data.name}.password"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        """A PostgreSQL program, as the postgres user where this is root."""
        cmd = [str(bin_dir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True)

    def _check_reachable_by_postgres(self) -> None:
        if os.geteuid() != 0:
            return
        for parent in self.data.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise PermissionError(
                    f"PostgreSQL runs as the postgres user, which cannot enter {parent} (mode "
                    f"{oct(os.stat(parent).st_mode & 0o777)}) on the way to {self.data}; choose "
                    "a folder outside it"
                )

    def start(self) -> None:
        self._check_reachable_by_postgres()
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(parents=True, exist_ok=True)
            self.data.chmod(0o700)
            self.password_file.unlink(missing_ok=True)
            generated_secret(self.password_file)
            given = self.data.parent / f".{self.data.name}.initdb-password"  # readable by initdb, then gone
            write_private(given, self.password_file.read_text())
            if os.geteuid() == 0:
                user = pwd.getpwnam("postgres")
                for path in (self.data, given):
                    os.chown(path, user.pw_uid, user.pw_gid)
            try:
                done = self._run(
                    "initdb",
                    "-D",
                    str(self.data),
                    "-A",
                    "scram-sha-256",
                    "-U",
                    "postgres",
                    f"--pwfile={given}",
                    "-E",
                    "UTF8",
                )
            finally:
                given.unlink()
            if done.returncode:
                raise ServerStartError(f"initdb {self.data} failed: {done.stderr.strip()}")
        port = free_port()
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {self.data}"
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.data / "server.log"), "-w", "start"
        )
        if done.returncode:
            log = self.data / "server.log"
            raise ServerStartError(
                f"PostgreSQL in {self.data} did not start: {done.stderr.strip()}\n"
                f"{log.read_text()[-2000:] if log.exists() else ''}"
            )
        self.port_file.write_text(str(port))

    @property
    def port(self) -> int:
        return int(self.port_file.read_text())

    def role_password_file(self, role: str) -> Path:
        return self.password_file if role == "postgres" else self.data.parent / f"{self.data.name}.{role}.password"

    def uri(self, database: str, driver: str = "psycopg", role: str = "postgres") -> str:
        """SQLAlchemy's URI of `database` as `role` (`driver=""`: libpq's own form); it holds the password: pass it
        in an environment variable or a 0600 file, never on a command line."""
        password = self.role_password_file(role).read_text().strip()
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{role}:{password}@127.0.0.1:{self.port}/{database}"

    def _superuser(self):
        import psycopg

        return psycopg.connect(self.uri("postgres", driver=""), autocommit=True)

    def create_role(self, role: str) -> None:
        """Create the login role `role` without any privilege (or reset it to that), with the password generated into
        its 0600 file; the server gets only its SCRAM verifier, computed here."""
        from psycopg import sql

        password = generated_secret(self.role_password_file(role))
        with self._superuser() as conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            statement = "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {}"
            verb = sql.SQL("ALTER" if exists else "CREATE")
            conn.execute(sql.SQL(statement).format(verb, sql.Identifier(role), sql.Literal(verifier)))

    def create_database(self, name: str, owner: str = "postgres") -> None:
        """Create the database `name` owned by `owner`; an existing one must already be `owner`'s."""
        from psycopg import sql

        with self._superuser() as conn:
            query = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s"
            found = conn.execute(query, (name,)).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
            elif found[0] != owner:
                raise ServerStartError(
                    f"the database {name!r} in {self.data} belongs to {found[0]!r}, not {owner!r} (an older setup "
                    "connected as the superuser); start from a new folder, or give it and its tables to "
                    f"{owner!r} (ALTER DATABASE / ALTER TABLE ... OWNER TO)"
                )

    def stop(self) -> None:
        """Stop the cluster if it runs (fast: clients are disconnected)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.port_file.unlink(missing_ok=True)
