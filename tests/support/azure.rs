//! A real Azure Blob emulator (azurite, from npm) on 127.0.0.1 for end-to-end tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};

use super::{KillOnDrop, Scratch, free_port, wait_for};

/// azurite's well-known development account (documented by Microsoft; not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
/// The development account's key.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// azurite's Blob service with one container, killed when dropped.
#[derive(Debug)]
pub struct AzuriteServer {
    pub port: u16,
    pub container: String,
    _process: KillOnDrop,
}

impl AzuriteServer {
    /// Starts `azurite-blob` (from `WALARCH_AZURITE` or PATH; scripts/install-emulators.sh
    /// installs it) with its data in `scratch`, and creates `container`.
    pub fn start(scratch: &Scratch, container: &str) -> Self {
        let program = std::env::var("WALARCH_AZURITE").unwrap_or_else(|_| "azurite-blob".into());
        let port = free_port();
        let data = scratch.path().join("azurite");
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::File::create(scratch.path().join("azurite.log")).expect("azurite log");
        let child = Command::new(&program)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(&data)
            .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program}: {e}; install it with scripts/install-emulators.sh")
            });
        let process = KillOnDrop(child);
        wait_for("azurite to listen", Duration::from_secs(60), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let server = AzuriteServer {
            port,
            container: container.to_owned(),
            _process: process,
        };
        let status = server.create_container();
        assert!(
            status.starts_with("HTTP/1.1 201"),
            "create container: {status}"
        );
        server
    }

    /// The account's endpoint (path style, as azurite serves it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Environment that points walarch at this server through `endpoint`.
    pub fn env_with_endpoint(endpoint: &str) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT),
            ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY),
            ("AZURE_STORAGE_ENDPOINT", endpoint),
            ("AZURE_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub fn env(&self) -> Vec<(String, String)> {
        Self::env_with_endpoint(&self.endpoint())
    }

    /// "Create Container", signed with the account key (azurite checks Shared Key
    /// signatures; object_store has no call for it). Returns the status line.
    fn create_container(&self) -> String {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let resource = format!("/{ACCOUNT}/{ACCOUNT}/{}", self.container);
        // VERB, then the twelve standard headers (all empty here), then the x-ms- headers
        // and the resource with its query parameters.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}\nrestype:container"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(ACCOUNT_KEY)
            .unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to azurite");
        write!(
            stream,
            "PUT /{ACCOUNT}/{}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.container, self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    }
}
