//! A real S3-compatible server (moto) on 127.0.0.1 for end-to-end tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{KillOnDrop, Scratch, free_port, wait_for};

/// moto's S3 server with one bucket, killed when dropped.
#[derive(Debug)]
pub struct S3Server {
    pub port: u16,
    pub bucket: String,
    _process: KillOnDrop,
}

impl S3Server {
    /// Starts `moto_server` (from `WALARCH_MOTO_SERVER` or PATH) and creates `bucket`.
    pub fn start(scratch: &Scratch, bucket: &str) -> Self {
        let program = std::env::var("WALARCH_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let log = std::fs::File::create(scratch.path().join("moto.log")).expect("create moto log");
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}; install it with: python3 -m pip install 'moto[server]'"));
        let process = KillOnDrop(child);
        wait_for("moto to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let server = S3Server {
            port,
            bucket: bucket.to_owned(),
            _process: process,
        };
        let status = server.raw_request("PUT", &format!("/{bucket}"));
        assert!(
            status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200"),
            "create bucket: {status}"
        );
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment that points walarch (and anything it runs under) at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "walarch-test"),
            ("AWS_SECRET_ACCESS_KEY", "walarch-test-secret"),
            ("AWS_REGION", "us-east-1"),
            ("WALARCH_S3_ENDPOINT", self.endpoint().as_str()),
            ("WALARCH_S3_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The server's bucket opened directly as an object store (to read or damage what walarch
    /// stored), the way walarch opens it.
    pub fn bucket_store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        use walarch_core::store::{self, CloudSettings, RepoLocation, S3Options, StoreOptions};
        let options = StoreOptions {
            s3: S3Options {
                endpoint: Some(self.endpoint()),
                allow_http: Some(true),
                ..S3Options::default()
            },
            cloud: CloudSettings::from_vars(self.env()),
            ..StoreOptions::default()
        };
        let location = RepoLocation::parse(&format!("s3://{}", self.bucket)).unwrap();
        store::open(&location, &options, false).expect("open the bucket")
    }

    /// A minimal unsigned HTTP request (moto does not check signatures); returns the status line.
    fn raw_request(&self, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    }
}
