//! An HTTP proxy on 127.0.0.1 that sits between a store client and an emulator and
//! misbehaves on cue: it answers chosen requests with an error status (a 5xx, or 429/503
//! throttling) instead of forwarding them, or cuts a response body short. The store's own
//! retries (object_store's HTTP client, configured by walarch) are what it exercises; the
//! engine above sees only what survives them.
//!
//! Plain HTTP/1.1 with one request per connection (`Connection: close` both ways), which is
//! all a test needs.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the proxy does to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and body; the request never reaches the emulator.
    Status(u16, &'static str),
    /// Forward, then send only the first half of the response body and close.
    TruncateBody,
}

#[derive(Debug, Default)]
struct Plan {
    /// Faults for the next requests (optionally only of one method), in order.
    queued: VecDeque<(Option<&'static str>, Fault)>,
    /// A fault for every request once `queued` is empty.
    always: Option<Fault>,
}

/// The proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    plan: Arc<Mutex<Plan>>,
    requests: Arc<AtomicU64>,
    faults_injected: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Forwards to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let requests = Arc::new(AtomicU64::new(0));
        let faults_injected = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (plan, requests, faults_injected, stop) = (
                plan.clone(),
                requests.clone(),
                faults_injected.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (plan, requests, faults_injected) =
                        (plan.clone(), requests.clone(), faults_injected.clone());
                    std::thread::spawn(move || {
                        let _ = serve(client, upstream_port, &plan, &requests, &faults_injected);
                    });
                }
            })
        };
        FaultProxy {
            port,
            plan,
            requests,
            faults_injected,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next `count` requests (of `method`, if given) get `fault`.
    pub fn next(&self, count: usize, method: Option<&'static str>, fault: Fault) {
        let mut plan = self.plan.lock().unwrap();
        for _ in 0..count {
            plan.queued.push_back((method, fault.clone()));
        }
    }

    /// Every request gets `fault` (once the queued ones are used), or none.
    pub fn always(&self, fault: Option<Fault>) {
        self.plan.lock().unwrap().always = fault;
    }

    /// Forgets every planned fault and resets the counters.
    pub fn reset(&self) {
        *self.plan.lock().unwrap() = Plan::default();
        self.requests.store(0, Ordering::SeqCst);
        self.faults_injected.store(0, Ordering::SeqCst);
    }

    /// Requests received since the last reset.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Faults injected since the last reset.
    pub fn faults_injected(&self) -> u64 {
        self.faults_injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One request: read it, decide, answer.
fn serve(
    client: TcpStream,
    upstream_port: u16,
    plan: &Mutex<Plan>,
    requests: &AtomicU64,
    faults_injected: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let (method, head, body) = read_request(&mut reader)?;
    requests.fetch_add(1, Ordering::SeqCst);
    let fault = {
        let mut plan = plan.lock().unwrap();
        let position = plan
            .queued
            .iter()
            .position(|(only, _)| only.is_none_or(|m| m == method));
        match position {
            Some(i) => plan.queued.remove(i).map(|(_, fault)| fault),
            None => plan.always.clone(),
        }
    };
    if fault.is_some() {
        faults_injected.fetch_add(1, Ordering::SeqCst);
    }
    let mut client = client;
    if let Some(Fault::Status(status, body)) = fault {
        return write!(
            client,
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&body)?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    let split = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
    let (response_head, response_body) = response.split_at(split);
    client.write_all(&close_connection(response_head))?;
    if fault == Some(Fault::TruncateBody) {
        client.write_all(&response_body[..response_body.len() / 2])?;
    } else {
        client.write_all(response_body)?;
    }
    client.flush()
}

/// Reads a request head and its `Content-Length` body; returns the method, the head as it
/// goes upstream (asking the emulator to close after answering) and the body.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<(&'static str, String, Vec<u8>)> {
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let method = ["GET", "HEAD", "PUT", "POST", "DELETE"]
        .into_iter()
        .find(|m| request_line.starts_with(&format!("{m} ")))
        .unwrap_or("OTHER");
    let mut head = request_line;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            content_length = value.trim().parse().unwrap_or(0);
        }
        assert!(
            !lower.starts_with("transfer-encoding:"),
            "the fault proxy does not forward chunked request bodies: {line}"
        );
        if !lower.starts_with("connection:") {
            head.push_str(&line);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    Ok((method, head, body))
}

/// The response head with `Connection: close` (the proxy closes after each response).
fn close_connection(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        if line == "\r\n" {
            out.push_str("Connection: close\r\n\r\n");
        } else if !line.to_ascii_lowercase().starts_with("connection:")
            && !line.to_ascii_lowercase().starts_with("keep-alive:")
        {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
