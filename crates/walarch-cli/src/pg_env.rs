//! libpq's environment, for the engine, which reads none: a connection from `--dbname` with
//! `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE` and `PGPASSWORD` filling the rest, as libpq
//! does, and the role a local connection uses.

use anyhow::Context;
use tokio_postgres::Config;

/// A libpq-style connection string (`host=... port=...` or a `postgresql://` URL),
/// completed from the `PG*` environment. Connections are plain (unix socket or loopback).
pub fn connection_config(conninfo: Option<&str>) -> anyhow::Result<Config> {
    let mut config: Config = match conninfo {
        Some(text) if !text.trim().is_empty() => text
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid connection string: {e}"))?,
        _ => Config::new(),
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        let host = env("PGHOST").unwrap_or_else(|| {
            ["/var/run/postgresql", "/tmp"]
                .into_iter()
                .find(|dir| std::path::Path::new(dir).is_dir())
                .unwrap_or("/tmp")
                .to_owned()
        });
        for host in host.split(',') {
            if host.starts_with('/') {
                config.host_path(host);
            } else {
                config.host(host);
            }
        }
    }
    if config.get_ports().is_empty()
        && let Some(port) = env("PGPORT")
    {
        let port = port
            .parse()
            .with_context(|| format!("PGPORT={port} is not a port"))?;
        config.port(port);
    }
    if config.get_user().is_none() {
        config.user(os_user());
    }
    if config.get_dbname().is_none()
        && let Some(db) = env("PGDATABASE")
    {
        config.dbname(db);
    }
    if config.get_password().is_none()
        && let Some(password) = env("PGPASSWORD")
    {
        config.password(password);
    }
    Ok(config)
}

/// The database role a local connection uses by default, as libpq chooses it: `PGUSER`,
/// else the OS user (`USER`, `LOGNAME`), else `postgres`.
pub fn os_user() -> String {
    ["PGUSER", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "postgres".to_owned())
}
