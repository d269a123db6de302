"""A local S3 API server in a folder of its own: OpenStack Swift from Debian's packages (`swift-proxy`,
`swift-account`, `swift-container`, `swift-object`, `memcached`) with its `s3api` and `tempauth` middleware, every
server on 127.0.0.1 at a free port, one replica on one device under the folder. A real S3 implementation (boto3,
MLflow's artifact store and DVC's S3 remote speak to it unchanged), not a mock.

    server = S3Server(folder); server.start(); server.create_bucket("dvc")
    server.endpoint, server.access_key, server.secret_key      # what a client sets; server.stop() when done

The access key is `catdog:team` (Swift's `account:user`); the secret is generated once into <folder>/s3_secret, and
both keys are in <folder>/aws_credentials (an AWS credentials file, for DVC's `credentialpath`). The folder is
created 0700 and every file holding a secret (those two, proxy-server.conf, swift.conf) 0600."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from pathlib import Path

from catdog.common.files import write_text
from catdog.team.loopback import (
    ServerStartError,
    checked_record,
    free_port,
    generated_secret,
    identity,
    private_dir,
    read_state,
    stop_recorded,
    wait_http,
    write_private,
)
from catdog.team.swift_config import ACCOUNT, SERVERS, STATE, USER, programs, proxy_conf, server_conf


class S3Server:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.state_file = folder / STATE

    @property
    def state(self) -> dict | None:
        return read_state(self.state_file)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.state['port']}"

    @property
    def access_key(self) -> str:
        return f"{ACCOUNT}:{USER}"

    @property
    def credentials_file(self) -> Path:
        """An AWS shared-credentials file (0600) with the keys as its default profile."""
        return self.folder / "aws_credentials"

    @property
    def secret_key(self) -> str:
        return generated_secret(self.folder / "s3_secret")

    def _rings(self, ring_builder: str, ports: dict[str, int]) -> None:
        (self.folder / "devices" / "d1").mkdir(parents=True, exist_ok=True)
        for kind in SERVERS:
            builder = str(self.folder / f"{kind}.builder")
            Path(builder).unlink(missing_ok=True)
            for args in (["create", "6", "1", "1"], ["add", f"r1z1-127.0.0.1:{ports[kind]}/d1", "100"], ["rebalance"]):
                done = subprocess.run([ring_builder, builder, *args], capture_output=True, text=True)
                if done.returncode not in (0, 1):  # 1: warnings (a one-device ring)
                    raise ServerStartError(f"swift-ring-builder {builder} {' '.join(args)}: {done.stdout}{done.stderr}")

    def start(self, timeout_s: float = 60) -> None:
        """Start (or restart) memcached, the three storage servers and the proxy (at the port it had before, if it
        ran from this folder before); the data stays in the folder."""
        found = programs()
        self.stop()
        private_dir(self.folder)
        ports = {name: free_port() for name in ("memcached", *SERVERS)}
        # The endpoint stays the same across restarts: clients keep it in their config (`dvc remote modify`).
        kept = self.folder / "proxy_port"
        ports["proxy"] = int(kept.read_text()) if kept.exists() else free_port()
        kept.write_text(str(ports["proxy"]))
        write_private(
            self.folder / "swift.conf",
            "[swift-hash]\nswift_hash_path_suffix = "
            f"{generated_secret(self.folder / 'hash_suffix')}\n[storage-policy:0]\nname = gold\ndefault = yes\n",
        )
        self._rings(found["ring"], ports)
        for kind in SERVERS:
            write_text(self.folder / f"{kind}-server.conf", server_conf(self.folder, kind, ports[kind]))
        write_private(
            self.folder / "proxy-server.conf",
            proxy_conf(self.folder, ports["proxy"], ports["memcached"], self.secret_key),
        )
        write_private(  # for DVC's `credentialpath`: the key stays off `dvc remote modify`'s command line
            self.credentials_file,
            f"[default]\naws_access_key_id = {self.access_key}\naws_secret_access_key = {self.secret_key}\n",
        )
        commands = {
            "memcached": [
                found["memcached"],
                "-l",
                "127.0.0.1",
                "-p",
                str(ports["memcached"]),
                "-U",
                "0",
                "-u",
                getpass.getuser(),
            ],
            **{kind: [found[kind], str(self.folder / f"{kind}-server.conf"), "--verbose"] for kind in SERVERS},
            "proxy": [found["proxy"], str(self.folder / "proxy-server.conf"), "--verbose"],
        }
        log = self.folder / "s3.log"
        with open(log, "ab") as out:
            started = {
                name: subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                for name, command in commands.items()
            }
        processes = {name: identity(process.pid) for name, process in started.items()}
        write_private(self.state_file, json.dumps({"port": ports["proxy"], "processes": processes}, indent=2) + "\n")
        try:
            wait_http(f"{self.endpoint}/healthcheck", started["proxy"], log, "Swift's proxy", timeout_s)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the servers the state file records, each only while its pid is still that server."""
        state = self.state
        if state:
            for name, recorded in reversed(list(state.get("processes", {}).items())):
                if checked_record(recorded, self.state_file):  # None: it had exited before start recorded it
                    stop_recorded(recorded, f"Swift's {name} server", grace_s=10)
            if "pids" in state:  # an older state file: pids alone cannot tell our servers from later processes
                print(f"{self.state_file} records pids only ({state['pids']}); not signalling them", file=sys.stderr)
            self.state_file.unlink()

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        s3 = self.client()
        if name not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=name)

    def env(self) -> dict[str, str]:
        """What a client of this server sets (boto3, MLflow's server, DVC through `dvc remote modify`)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
