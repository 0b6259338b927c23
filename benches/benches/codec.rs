//! Compression, checksum and header-check cost on real WAL: what wal-push and wal-fetch spend
//! per segment besides I/O. The segments come from a throwaway PostgreSQL 15 cluster running
//! a pgbench workload, made once and cached under the target directory, because synthetic
//! filler compresses very differently from real WAL.
//!
//! `Compression::encode` is "compress + checksum": zstd frames carry an XXH64 content
//! checksum and gzip members a CRC-32. `Codec::decode` and `decode_into` verify them.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use walarch_core::archive::validate_wal_content;
use walarch_core::codec::{Codec, Compression};
use walarch_core::crypto::Keyring;
use walarch_core::wal::{RecordEvent, WalDecoder, WalFileName};

/// How many completed segments the benches run over.
const SEGMENTS: usize = 4;
/// Default segment size: 16 MiB.
const SEGMENT_BYTES: usize = 16 << 20;
/// PostgreSQL whose WAL we measure; `WALARCH_BENCH_PG_BIN` points elsewhere.
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Bound on pgbench runs of 2000 transactions each; about 3 are needed.
const MAX_WORKLOAD_ROUNDS: usize = 20;

struct Segment {
    name: WalFileName,
    bytes: Vec<u8>,
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("walarch-bench-wal")
}

/// The cached segments, generating them first if the cache is missing or incomplete.
fn real_wal() -> Vec<Segment> {
    let dir = cache_dir();
    if load(&dir).is_none() {
        generate(&dir);
    }
    let segments = load(&dir).expect("freshly generated WAL cache is unreadable");
    for segment in &segments {
        validate_wal_content(&segment.name, &segment.bytes)
            .unwrap_or_else(|e| panic!("cached WAL in {} is not valid: {e}", dir.display()));
    }
    segments
}

fn load(dir: &Path) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let Some(Ok(name)) = path.file_name()?.to_str().map(str::parse::<WalFileName>) else {
            continue;
        };
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() != SEGMENT_BYTES {
            return None;
        }
        segments.push(Segment { name, bytes });
    }
    segments.sort_by_key(|s| s.name.to_string());
    (segments.len() == SEGMENTS).then_some(segments)
}

/// A temporary cluster: stopped and deleted on drop, also when a step panics.
struct Cluster {
    bin: PathBuf,
    root: PathBuf,
    as_postgres: bool,
    port: u16,
    started: bool,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A PostgreSQL program, run as the `postgres` user when we are root, since the server
    /// refuses to run as root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        // initdb and pg_ctl fail when the user cannot read the working directory.
        command.current_dir(&self.root);
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Client connection options: unix socket in our directory, our port.
    fn client_args(&self) -> [String; 6] {
        [
            "-h".into(),
            self.root.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "bench".into(),
        ]
    }

    fn client(&self, program: &str, extra: &[&str]) -> String {
        let conn = self.client_args();
        let mut args: Vec<&str> = conn.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        String::from_utf8(self.run(program, &args).stdout).expect("client output is not UTF-8")
    }

    fn sql(&self, query: &str) -> String {
        self.client("psql", &["-XAtq", "-d", "postgres", "-c", query])
            .trim()
            .to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started {
            let data = self.data();
            // Immediate: the cluster is thrown away, a shutdown checkpoint is wasted time.
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("no free port on 127.0.0.1");
    listener
        .local_addr()
        .expect("bound socket has an address")
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs initdb, a pgbench load and pgbench transactions, and copies the first completed
/// segments of the transactional part into `cache`.
fn generate(cache: &Path) {
    let bin = std::env::var_os("WALARCH_BENCH_PG_BIN")
        .map_or_else(|| PathBuf::from(DEFAULT_PG_BIN), PathBuf::from);
    assert!(
        bin.join("initdb").exists(),
        "PostgreSQL not found in {} (set WALARCH_BENCH_PG_BIN)",
        bin.display()
    );
    eprintln!("generating real WAL into {} (once) ...", cache.display());
    let root = std::env::temp_dir().join(format!("walarch-bench-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("cannot create the cluster directory");
    let mut cluster = Cluster {
        bin,
        root,
        as_postgres: is_root(),
        port: free_port(),
        started: false,
    };
    if cluster.as_postgres {
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&cluster.root)
            .status()
            .expect("cannot run chown");
        assert!(
            status.success(),
            "chown postgres {}",
            cluster.root.display()
        );
    }
    let data = cluster.data().display().to_string();
    cluster.run(
        "initdb",
        &[
            "-D",
            &data,
            "-U",
            "bench",
            "--auth=trust",
            "--no-sync",
            "--wal-segsize=16",
        ],
    );
    let options = format!(
        "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
        cluster.port,
        cluster.root.display()
    );
    let log = cluster.root.join("server.log").display().to_string();
    cluster.started = true;
    cluster.run(
        "pg_ctl",
        &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
    );
    cluster.client("pgbench", &["-q", "-i", "-s", "10", "postgres"]);
    // Measure the WAL an archiver sees in steady state (updates, with the full-page images
    // that follow a checkpoint), not the bulk load, which compresses far better: only
    // segments begun after the load count.
    cluster.sql("CHECKPOINT");
    let load_end = cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let pg_wal = cluster.data().join("pg_wal");
    let mut oltp = Vec::new();
    for _round in 0..MAX_WORKLOAD_ROUNDS {
        cluster.client("pgbench", &["-c", "2", "-j", "2", "-t", "1000", "postgres"]);
        // Files older than the one being written are complete.
        let current = cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        oltp = std::fs::read_dir(&pg_wal)
            .expect("cannot list pg_wal")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| matches!(n.parse(), Ok(WalFileName::Segment(_))))
            .filter(|n| *n > load_end && *n < current)
            .collect();
        if oltp.len() >= SEGMENTS {
            break;
        }
    }
    assert!(
        oltp.len() >= SEGMENTS,
        "pgbench wrote only {} completed segments after the load",
        oltp.len()
    );
    oltp.sort();

    let staging = cache.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("cannot create the WAL cache");
    for name in &oltp[..SEGMENTS] {
        std::fs::copy(pg_wal.join(name), staging.join(name)).expect("cannot copy a segment");
    }
    let _ = std::fs::remove_dir_all(cache);
    std::fs::rename(&staging, cache).expect("cannot move the WAL cache into place");
    drop(cluster);
}

fn total_bytes(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| s.bytes.len() as u64).sum()
}

fn codecs(c: &mut Criterion) {
    let segments = real_wal();
    let total = total_bytes(&segments);
    let encoders = [(Codec::Zstd, 1), (Codec::Zstd, 3), (Codec::Gzip, 6)];

    let mut encode = c.benchmark_group("encode");
    encode.throughput(Throughput::Bytes(total));
    encode.sampling_mode(SamplingMode::Flat);
    for (codec, level) in encoders {
        let compression = Compression::new(codec, Some(level)).unwrap();
        let stored: u64 = segments
            .iter()
            .map(|s| compression.encode(&s.bytes).unwrap().len() as u64)
            .sum();
        eprintln!(
            "{codec}-{level}: {total} -> {stored} bytes (ratio {:.2})",
            total as f64 / stored as f64
        );
        encode.bench_function(BenchmarkId::new(codec.to_string(), level), |b| {
            b.iter(|| {
                for segment in &segments {
                    std::hint::black_box(compression.encode(&segment.bytes).unwrap());
                }
            })
        });
    }
    // walarch's default (zstd-1 with its WAL min-match) fed two ways: a whole buffer, and a
    // reader copied in small chunks (how wal-push fed the encoder from the file).
    let default = Compression::default();
    encode.bench_function(BenchmarkId::new("default_whole_buffer", 1), |b| {
        b.iter(|| {
            for segment in &segments {
                std::hint::black_box(default.encode(&segment.bytes).unwrap());
            }
        })
    });
    encode.bench_function(BenchmarkId::new("default_reader", 1), |b| {
        b.iter(|| {
            for segment in &segments {
                let reader = std::io::Cursor::new(&segment.bytes[..]);
                std::hint::black_box(
                    default
                        .encode_reader(reader, Some(segment.bytes.len() as u64))
                        .unwrap(),
                );
            }
        })
    });
    // Client-side encryption on top of zstd-1 (what wal-push does with a key file): the
    // difference to zstd-1 alone is the encryption's cost; `seal` alone on the compressed bytes.
    let keyring = Keyring::parse(&Keyring::generate()).unwrap();
    let zstd1 = Compression::new(Codec::Zstd, Some(1)).unwrap();
    encode.bench_function(BenchmarkId::new("zstd_sealed", 1), |b| {
        b.iter(|| {
            for segment in &segments {
                let compressed = zstd1.encode(&segment.bytes).unwrap();
                std::hint::black_box(keyring.seal(&compressed));
            }
        })
    });
    let compressed: Vec<Vec<u8>> = segments
        .iter()
        .map(|s| zstd1.encode(&s.bytes).unwrap())
        .collect();
    encode.bench_function(BenchmarkId::new("seal_only", 1), |b| {
        b.iter(|| {
            for object in &compressed {
                std::hint::black_box(keyring.seal(object));
            }
        })
    });
    encode.finish();

    let mut decode = c.benchmark_group("decode");
    // Throughput of the decoded (original) bytes, as wal-fetch hands them to PostgreSQL.
    decode.throughput(Throughput::Bytes(total));
    decode.sampling_mode(SamplingMode::Flat);
    for (codec, level) in [(Codec::Zstd, 1), (Codec::Gzip, 6)] {
        let compression = Compression::new(codec, Some(level)).unwrap();
        let stored: Vec<Vec<u8>> = segments
            .iter()
            .map(|s| compression.encode(&s.bytes).unwrap())
            .collect();
        // Buffered, bounded: push comparing with an already stored copy.
        decode.bench_function(BenchmarkId::new(codec.to_string(), level), |b| {
            b.iter(|| {
                for object in &stored {
                    std::hint::black_box(codec.decode(object, SEGMENT_BYTES).unwrap());
                }
            })
        });
        // Streaming: wal-fetch writing a segment out, here to a sink to leave the disk out.
        let streaming = format!("{codec}_into");
        decode.bench_function(BenchmarkId::new(streaming, level), |b| {
            b.iter(|| {
                for object in &stored {
                    codec.decode_into(object, &mut std::io::sink()).unwrap();
                }
            })
        });
    }
    // wal-fetch with a key file: open (authenticate, decrypt), then decompress.
    let sealed: Vec<Vec<u8>> = compressed.iter().map(|c| keyring.seal(c)).collect();
    decode.bench_function(BenchmarkId::new("zstd_opened_into", 1), |b| {
        b.iter(|| {
            for object in &sealed {
                let opened = keyring.open(object).unwrap();
                Codec::Zstd
                    .decode_into(&opened, &mut std::io::sink())
                    .unwrap();
            }
        })
    });
    decode.finish();

    // The header and length check runs before every push and after every fetch. It reads
    // 40 bytes whatever the segment size, so it is counted per file, not per byte.
    let mut validate = c.benchmark_group("validate");
    validate.throughput(Throughput::Elements(segments.len() as u64));
    validate.bench_function("segment_header", |b| {
        b.iter(|| {
            for segment in &segments {
                std::hint::black_box(validate_wal_content(&segment.name, &segment.bytes).unwrap());
            }
        })
    });
    validate.finish();

    // Record decoding (plan, the recoverable window): what finding commit times costs per
    // segment once it is downloaded and decompressed.
    let mut records = c.benchmark_group("records");
    records.throughput(Throughput::Bytes(total));
    records.sampling_mode(SamplingMode::Flat);
    let mut counted = (0, 0);
    let mut decoder = WalDecoder::new();
    for segment in &segments {
        let decoded = decoder.decode_segment(&segment.bytes).unwrap();
        counted.0 += decoded.records.len();
        counted.1 += decoded
            .records
            .iter()
            .filter(|r| matches!(r.event, Some(RecordEvent::Commit { .. })))
            .count();
    }
    eprintln!(
        "records: {} records, {} commits in {} segments",
        counted.0,
        counted.1,
        segments.len()
    );
    records.bench_function("decode_segments", |b| {
        b.iter(|| {
            let mut decoder = WalDecoder::new();
            for segment in &segments {
                std::hint::black_box(decoder.decode_segment(&segment.bytes).unwrap());
            }
        })
    });
    records.finish();
}

criterion_group! {
    name = benches;
    // Small enough to finish in a few minutes on 2 vCPUs.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = codecs
}
criterion_main!(benches);
