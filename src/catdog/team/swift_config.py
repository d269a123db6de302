"""What the local S3 server (catdog.team.swift) runs: Debian's Swift programs, found or named for installing, and
the config file of each of its servers (the proxy's with the s3api and tempauth middleware)."""

from __future__ import annotations

import getpass
import shutil
from pathlib import Path

INSTALL = (
    "install Debian's Swift and memcached (`apt-get install swift-proxy swift-account swift-container "
    "swift-object memcached`; .ci/run does)"
)
ACCOUNT, USER = "catdog", "team"
SERVERS = ("account", "container", "object")
STATE = "s3.json"


def programs() -> dict[str, str]:
    """The server programs, or FileNotFoundError naming the packages to install."""
    names = {
        "memcached": "memcached",
        "proxy": "swift-proxy-server",
        "ring": "swift-ring-builder",
        **{s: f"swift-{s}-server" for s in SERVERS},
    }
    found = {key: shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin") for key, name in names.items()}
    missing = [names[key] for key, path in found.items() if path is None]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found; {INSTALL}")
    return found


def defaults(folder: Path, port: int) -> list[str]:
    """The [DEFAULT] section every server's config shares: loopback, one process, no syslog."""
    return [
        "[DEFAULT]",
        f"swift_dir = {folder}",
        "bind_ip = 127.0.0.1",
        f"bind_port = {port}",
        "workers = 0",
        f"user = {getpass.getuser()}",
        f"log_address = {folder / 'no-syslog'}",
        "log_level = WARNING",
    ]


def server_conf(folder: Path, kind: str, port: int) -> str:
    return "\n".join(
        [
            *defaults(folder, port),
            f"devices = {folder / 'devices'}",
            "mount_check = false",
            "[pipeline:main]",
            f"pipeline = {kind}-server",
            f"[app:{kind}-server]",
            f"use = egg:swift#{kind}",
            "",
        ]
    )


def proxy_conf(folder: Path, port: int, memcached_port: int, secret: str) -> str:
    # s3api right before tempauth, which checks S3 signatures against its users' keys (Swift's s3api docs).
    pipeline = (
        "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo "
        "proxy-logging proxy-server"
    )
    return "\n".join(
        [
            *defaults(folder, port),
            "[pipeline:main]",
            f"pipeline = {pipeline}",
            "[app:proxy-server]",
            "use = egg:swift#proxy",
            "account_autocreate = true",
            "[filter:tempauth]",
            "use = egg:swift#tempauth",
            f"user_{ACCOUNT}_{USER} = {secret} .admin",
            "[filter:s3api]",
            "use = egg:swift#s3api",
            "location = us-east-1",
            "[filter:cache]",
            "use = egg:swift#memcache",
            f"memcache_servers = 127.0.0.1:{memcached_port}",
            *(
                f"[filter:{name}]\nuse = egg:swift#{name.replace('-', '_')}"
                for name in (
                    "catch_errors",
                    "gatekeeper",
                    "healthcheck",
                    "proxy-logging",
                    "listing_formats",
                    "copy",
                    "slo",
                    "dlo",
                )
            ),
            "",
        ]
    )
