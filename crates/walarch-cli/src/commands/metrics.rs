//! `walarch metrics`: OpenMetrics text on standard output (for node_exporter's textfile
//! collector), or served over HTTP with `--listen`, read fresh on every scrape.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use walarch_core::Engine;
use walarch_core::metrics::CONTENT_TYPE;

use crate::Failure;
use crate::args::MetricsArgs;
use crate::settings::Settings;

struct Sources {
    engine: Engine,
    pgdata: Option<PathBuf>,
    connection: Option<tokio_postgres::Config>,
}

impl Sources {
    async fn read(&self) -> String {
        self.engine
            .metrics(self.pgdata.as_deref(), self.connection.as_ref())
            .await
            .text()
            .to_owned()
    }
}

pub async fn run(settings: &Settings, args: &MetricsArgs) -> Result<(), Failure> {
    let sources = Arc::new(Sources {
        engine: Engine::open(settings.engine.clone())?,
        pgdata: args.pgdata.clone(),
        connection: args
            .dbname
            .as_deref()
            .map(|conninfo| crate::pg_env::connection_config(Some(conninfo)))
            .transpose()?,
    });
    let Some(address) = args.listen else {
        print!("{}", sources.read().await);
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    eprintln!(
        "serving metrics at http://{}/metrics",
        listener.local_addr()?
    );
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(sources);
    let cancel = super::cancel_on_signal();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .context("serving metrics")?;
    Ok(())
}

async fn scrape(State(sources): State<Arc<Sources>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], sources.read().await)
}
