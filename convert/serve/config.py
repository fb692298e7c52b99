"""The service's settings: defaults, then a TOML file (``--config``), then flags and their
environment variables (``RCONV_*``, read by the command line), the later winning.

The file groups keys in tables for people; keys are unique across them::

    listen = "0.0.0.0:8340"
    broker = "redis://10.0.0.5:6379/0"   # default: SQLite under state_dir
    workers = 2                          # local worker processes; 0 for none
    auth_header = "Bearer s3cret"        # required Authorization value (acceld webhook.auth_header)

    [rules]                              # acceld converter.rules
    target_suffix = "-nydus"
    build_cache_tag = "nydus-cache"
    platforms = ["linux/amd64"]

    [convert]
    fs_version = 6
    compressor = "zstd"
    plain_http = true

    [retry]
    max_retries = 3
    retry_backoff = 2.0
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from convert.errors import ConvertError
from convert.options import SERVICE_JOBS
from convert.serve.engine import DEFAULT_VISIBILITY_TIMEOUT, embedded_broker
from convert.serve.rules import DEFAULT_SUFFIX, Rules
from convert.serve.task import TaskOptions
from rafs.errors import RafsError
from registry.errors import RegistryError

DEFAULT_LISTEN = "127.0.0.1:8340"
_TABLES = ("rules", "convert", "retry")


class ConfigError(ConvertError):
    """A configuration file or value that cannot be used (one line)."""


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "rconv"


@dataclass(frozen=True)
class ServeConfig:
    listen: str = DEFAULT_LISTEN
    broker: str | None = None  # None: the embedded SQLite broker under state_dir
    result_backend: str | None = None
    workers: int = 1
    state_dir: Path = field(default_factory=default_state_dir)
    auth_header: str | None = None
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    sync_timeout: float = 3600.0
    retention_days: float = 7.0  # finished tasks are listed this long
    max_retries: int = 3
    retry_backoff: float = 2.0
    target_suffix: str = DEFAULT_SUFFIX
    build_cache_tag: str | None = None
    platforms: tuple[str, ...] = ()
    all_platforms: bool = False
    fs_version: int = 6
    compressor: str = "zstd"
    chunk_size: int = 0x100000
    plain_http: bool = False
    insecure: bool = False
    jobs: int = SERVICE_JOBS
    max_layer_size: int | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"listen {self.listen!r}: expected HOST:PORT")
        return host.strip("[]") or "127.0.0.1", int(port)

    @property
    def broker_url(self) -> str:
        return self.broker or embedded_broker(self.state_dir)

    @property
    def retry(self) -> dict[str, float]:
        return {"max": self.max_retries, "backoff": self.retry_backoff}

    def rules(self) -> Rules:
        try:
            options = TaskOptions(
                fs_version=self.fs_version, chunk_size=self.chunk_size,
                compressor=self.compressor, platforms=tuple(self.platforms),
                all_platforms=self.all_platforms, plain_http=self.plain_http,
                insecure=self.insecure, jobs=self.jobs, max_layer_size=self.max_layer_size,
            )  # fmt: skip
        except (RafsError, RegistryError) as exc:
            raise ConfigError(f"conversion options: {exc}") from None
        return Rules(self.target_suffix, self.build_cache_tag, options)


def load_config(path: Path | None, overrides: dict[str, Any]) -> ServeConfig:
    """Defaults < the file at ``path`` < ``overrides`` (flags; None means not given)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read(path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "state_dir" in values:
        values["state_dir"] = Path(values["state_dir"]).expanduser()
    if isinstance(values.get("platforms"), str):
        values["platforms"] = tuple(p.strip() for p in values["platforms"].split(",") if p.strip())
    if isinstance(values.get("chunk_size"), str):
        values["chunk_size"] = int(values["chunk_size"], 0)
    if isinstance(values.get("platforms"), list):
        values["platforms"] = tuple(values["platforms"])
    try:
        config = ServeConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"settings: {exc}") from None
    config.host_port  # noqa: B018 (validated here, once)
    config.rules()
    return config


def _read(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    known = {f.name for f in fields(ServeConfig)}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TABLES and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return flat
