//! The bridge end to end, on loopback: producer processes append while 16 subscribers (some
//! mirroring) receive; the bridge killed and restarted mid-stream; a subscriber that stops
//! reading; bad requests of every kind. Every bridge binds 127.0.0.1 port 0; every directory
//! is temporary; child processes die with the test (PR_SET_PDEATHSIG) and are killed on
//! failure.
//!
//! Children are this test binary run again with only `child_entry` selected and
//! `LOGBUS_TEST_CHILD` naming their role.

mod common;

use common::{env, env_parse, produce, report, Children, Model, Tracker};
use logbus::bridge::protocol::{self, message_kind, ErrorCode, MessageHeader, Request};
use logbus::bridge::{
    Bridge, BridgeConfig, BridgeError, Endpoint, Mirror, RemoteConsumer, RemoteOptions, Start,
};
use logbus::{Log, LogOptions, StartAt};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SEGMENT_CAPACITY: u64 = 64 * 1024;
/// How long a subscriber may go without a message before the test calls it stalled.
const STALL: Duration = Duration::from_secs(60);

#[test]
#[ignore = "child process entry point; run by other tests"]
fn child_entry() {
    let Some(role) = common::child_role() else {
        return;
    };
    common::child_init();
    match role.as_str() {
        "producer" => {
            let log = Log::open(env("LOGBUS_TEST_LOG")).expect("open the log");
            let id: u32 = env_parse("LOGBUS_TEST_ID");
            let count: u64 = env_parse("LOGBUS_TEST_COUNT");
            let model = Model::new(log.max_payload_len());
            let done = produce(&log, &model, id, count);
            report(&[("last", done.last.to_string())]);
        }
        "bridge" => {
            let config = test_config(Path::new(&env("LOGBUS_TEST_ROOT")));
            let bridge = Bridge::start(config).expect("start the bridge");
            println!("BRIDGE-ADDR {}", bridge.local_addr());
            std::io::stdout().flush().unwrap();
            // Serve until killed (or until the parent is gone: PR_SET_PDEATHSIG).
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

fn test_config(root: &Path) -> BridgeConfig {
    let mut config = BridgeConfig::new(root);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.log_connections = false;
    config.heartbeat_interval = Duration::from_millis(200);
    config.stall_timeout = Duration::from_secs(10);
    config
}

fn options() -> RemoteOptions {
    RemoteOptions::new()
        .dead_after(Duration::from_secs(2))
        .reconnect_window(Some(Duration::from_secs(60)))
}

fn create_log(dir: &Path) -> Log {
    Log::create(dir, &LogOptions::new().segment_capacity(SEGMENT_CAPACITY)).expect("create the log")
}

/// Reads with `remote` until `tracker` has seen every expected message.
fn read_remote(remote: &mut RemoteConsumer, tracker: &mut Tracker) -> Result<(), String> {
    let mut last_progress = Instant::now();
    while !tracker.done() {
        let mut failure = None;
        let n = remote
            .wait_batch(256, Some(Duration::from_millis(200)), |m| {
                if failure.is_none() {
                    failure = tracker.observe(&m).err();
                }
                // Payloads keep the format's alignment in the receive buffer (8 for a
                // frame's, 4 for a record's), as in a mapped segment.
                if failure.is_none() && m.payload().as_ptr() as usize % 4 != 0 {
                    failure = Some(format!("payload at {} misaligned", m.position()));
                }
            })
            .map_err(|e| format!("{remote:?}: {e}"))?;
        if let Some(e) = failure {
            return Err(format!("{e} (after {})", tracker.progress()));
        }
        if n > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL {
            return Err(format!(
                "nothing for {STALL:?} at {remote:?}; {}",
                tracker.progress()
            ));
        }
    }
    Ok(())
}

/// Mirrors until the replica reaches `target` (which is u64::MAX until it is known).
fn mirror_until(mirror: &mut Mirror, target: &AtomicU64) -> Result<(), String> {
    let mut last_progress = Instant::now();
    while mirror.position() < target.load(Ordering::SeqCst) {
        let n = mirror
            .step(Some(Duration::from_millis(200)))
            .map_err(|e| format!("{mirror:?}: {e}"))?;
        if n > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL {
            return Err(format!("nothing for {STALL:?} at {mirror:?}"));
        }
    }
    Ok(())
}

/// Checks that every segment data area of `replica` from its first segment on is byte for
/// byte the source's, and that the source has nothing the replica lacks.
fn assert_data_areas_equal(source: &Path, replica: &Path) {
    let bases = |dir: &Path| -> Vec<u64> {
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| logbus::format::parse_segment_file_name(e.ok()?.file_name().to_str()?))
            .collect();
        bases.sort_unstable();
        bases
    };
    let replica_bases = bases(replica);
    let first = *replica_bases.first().expect("the replica has segments");
    let header = logbus::format::SEGMENT_HEADER_LEN as usize;
    let mut compared = 0;
    for base in bases(source).into_iter().filter(|&b| b >= first) {
        let name = logbus::format::segment_file_name(base);
        let source_bytes = std::fs::read(source.join(&name)).unwrap();
        match std::fs::read(replica.join(&name)) {
            Ok(replica_bytes) => {
                assert_eq!(source_bytes.len(), replica_bytes.len(), "{name}");
                if source_bytes[header..] != replica_bytes[header..] {
                    let at = source_bytes[header..]
                        .iter()
                        .zip(&replica_bytes[header..])
                        .position(|(a, b)| a != b)
                        .unwrap();
                    panic!(
                        "{}: data areas differ from position {}",
                        replica.join(&name).display(),
                        base + at as u64
                    );
                }
                compared += 1;
            }
            Err(_) => assert!(
                source_bytes[header..].iter().all(|&b| b == 0),
                "the replica lacks {name}, which holds data"
            ),
        }
    }
    assert!(compared > 0);
}

/// Joins subscriber threads, failing with every error they had.
fn join_all(threads: Vec<(String, JoinHandle<Result<(), String>>)>) {
    let mut errors = Vec::new();
    for (name, thread) in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{name}: {e}")),
            Err(_) => errors.push(format!("{name}: panicked")),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn producer_processes_and_16_subscribers_some_mirroring_get_every_message_once_in_order() {
    let root = common::tempdir();
    let replicas = common::tempdir();
    let log_dir = root.path().join("orders");
    let log = create_log(&log_dir);
    let model = Model::new(log.max_payload_len());
    let per_producer: u64 = if cfg!(debug_assertions) {
        15_000
    } else {
        60_000
    };
    let counts = [(0u32, per_producer), (1u32, per_producer)];
    let bridge = Bridge::start(test_config(root.path())).unwrap();
    let addr = bridge.local_addr();
    let target = Arc::new(AtomicU64::new(u64::MAX));

    // 12 consumers and 4 mirrors subscribe before the producers start, from the earliest
    // position, so they see the log grow.
    let mut threads = Vec::new();
    for i in 0..12 {
        let mut remote =
            RemoteConsumer::connect(addr, "orders", Start::Earliest, options()).unwrap();
        let thread = std::thread::spawn(move || {
            let mut tracker = Tracker::new(model, &counts);
            read_remote(&mut remote, &mut tracker)
        });
        threads.push((format!("consumer {i}"), thread));
    }
    for i in 0..4 {
        let replica = replicas.path().join(format!("m{i}"));
        let mut mirror =
            Mirror::open(addr, "orders", &replica, Start::Earliest, options()).unwrap();
        let target = target.clone();
        let thread = std::thread::spawn(move || mirror_until(&mut mirror, &target));
        threads.push((format!("mirror {i}"), thread));
    }

    let mut children = Children::new();
    for (id, count) in counts {
        children.spawn(
            &format!("producer {id}"),
            "producer",
            &[
                ("LOGBUS_TEST_LOG", log_dir.display().to_string()),
                ("LOGBUS_TEST_ID", id.to_string()),
                ("LOGBUS_TEST_COUNT", count.to_string()),
            ],
        );
    }
    children.wait_all(Duration::from_secs(300));
    // Every claim is committed or aborted now: the tail is where the data ends.
    target.store(log.tail(), Ordering::SeqCst);
    join_all(threads);

    // The replicas: byte for byte the source, readable with the ordinary API...
    for i in 0..4 {
        let replica_dir = replicas.path().join(format!("m{i}"));
        assert_data_areas_equal(&log_dir, &replica_dir);
        let replica = Log::open(&replica_dir).unwrap();
        assert_eq!(replica.id(), log.id());
        assert_eq!(replica.tail(), log.tail());
        let mut consumer = replica.consumer(StartAt::Earliest).unwrap();
        let mut tracker = Tracker::new(model, &counts);
        common::read_until_done(
            &mut consumer,
            &mut tracker,
            common::ReadMode::Wait,
            Duration::from_secs(10),
        );
    }
    // ...and servable by another bridge in turn: a fan-out tree.
    let second = Bridge::start(test_config(replicas.path())).unwrap();
    let mut remote =
        RemoteConsumer::connect(second.local_addr(), "m2", Start::Earliest, options()).unwrap();
    let mut tracker = Tracker::new(model, &counts);
    read_remote(&mut remote, &mut tracker).unwrap();
    let stats = bridge.stats();
    assert_eq!(stats.subscriptions, 16);
    assert_eq!(stats.refused, 0);
    assert!(stats.bytes_sent >= 16 * log.tail(), "{stats:?}");
}

#[test]
fn start_positions_records_inside_a_set_latest_and_bad_positions() {
    let root = common::tempdir();
    let log = create_log(&root.path().join("l"));
    let mut producer = log.producer().unwrap();
    producer.offer(b"zero").unwrap();
    let set = producer.offer_batch(&[&b"r0"[..], b"r1", b"r2"]).unwrap();
    drop(producer.claim(40).unwrap()); // aborted: padding
    producer.offer(b"after").unwrap();
    let bridge = Bridge::start(test_config(root.path())).unwrap();
    let addr = bridge.local_addr();

    // The records of the set, read locally, give their positions.
    let mut local = log.consumer(StartAt::Earliest).unwrap();
    let mut expected = Vec::new();
    while let Some(m) = local.poll().unwrap() {
        expected.push((m.position(), m.payload().to_vec(), m.timestamp_ns()));
    }
    assert_eq!(expected.len(), 5);
    assert!(expected[1].0 > set);

    let read = |start: Start| {
        let mut remote = RemoteConsumer::connect(addr, "l", start, options()).unwrap();
        let mut got = Vec::new();
        while let Some(m) = remote.wait(Some(Duration::from_millis(300))).unwrap() {
            got.push((m.position(), m.payload().to_vec(), m.timestamp_ns()));
        }
        got
    };
    assert_eq!(read(Start::Earliest), expected);
    assert_eq!(read(Start::Position(expected[2].0)), expected[2..]);
    assert_eq!(read(Start::Position(expected[4].0)), expected[4..]);

    let mut latest = RemoteConsumer::connect(addr, "l", Start::Latest, options()).unwrap();
    assert!(latest.poll().unwrap().is_none());
    let position = producer.offer(b"new").unwrap();
    let m = latest.wait(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!((m.position(), m.payload()), (position, &b"new"[..]));

    for bad in [expected[1].0 + 2, 8, log.tail() + 8] {
        match RemoteConsumer::connect(addr, "l", Start::Position(bad), options()) {
            Err(BridgeError::Refused { code, message, .. }) => {
                assert_eq!(code, ErrorCode::InvalidPosition, "{message}");
                assert!(message.contains(&bad.to_string()), "{message}");
            }
            other => panic!("position {bad}: {other:?}"),
        }
    }
}

#[test]
fn a_mirror_resumes_where_its_replica_ends_and_its_replica_is_read_while_it_grows() {
    let root = common::tempdir();
    let replica_dir = root.path().join("replicas").join("copy");
    let log = create_log(&root.path().join("src"));
    let model = Model::new(log.max_payload_len());
    let counts = [(0u32, 6000u64)];
    common::produce(&log, &model, 0, 3000);
    let bridge = Bridge::start(test_config(root.path())).unwrap();
    let addr = bridge.local_addr();

    let mut mirror = Mirror::open(addr, "src", &replica_dir, Start::Earliest, options()).unwrap();
    let half = log.tail();
    assert!(mirror.run_until(half, Duration::from_secs(60)).unwrap());
    // A second mirror of the same replica is refused while the first holds it.
    let err = Mirror::open(addr, "src", &replica_dir, Start::Earliest, options()).unwrap_err();
    assert!(matches!(err, BridgeError::Replica { .. }), "{err}");
    drop(mirror);

    // A local consumer of the replica waits while the mirror is away...
    let replica = Log::open(&replica_dir).unwrap();
    let reader = std::thread::spawn(move || {
        let mut consumer = replica.consumer(StartAt::Earliest).unwrap();
        let mut tracker = Tracker::new(model, &counts);
        common::read_until_done(
            &mut consumer,
            &mut tracker,
            common::ReadMode::Wait,
            Duration::from_secs(60),
        );
    });
    // ...and the producer goes on; the reopened mirror resumes from the replica's end.
    let mut producer_model_rest = Vec::new();
    {
        let log = log.clone();
        producer_model_rest.push(std::thread::spawn(move || {
            // Messages 3000.. of producer 0: a second `produce` would say hello again, so
            // write the rest by hand.
            let mut producer = log.producer().unwrap();
            let mut buf = vec![0u8; model.max_payload()];
            for seq in 3000..6000 {
                let b = &mut buf[..model.len(0, seq)];
                model.write(0, seq, b);
                producer.offer(b).unwrap();
            }
        }));
    }
    let mut mirror = Mirror::open(addr, "src", &replica_dir, Start::Latest, options()).unwrap();
    assert_eq!(mirror.position(), half);
    for t in producer_model_rest {
        t.join().unwrap();
    }
    assert!(mirror
        .run_until(log.tail(), Duration::from_secs(60))
        .unwrap());
    reader.join().unwrap();
    assert_data_areas_equal(&root.path().join("src"), &replica_dir);
    assert_eq!(mirror.connections(), 1);
}

#[test]
fn a_single_producer_logs_replica_is_an_ordinary_log_that_its_mirror_reopens() {
    let root = common::tempdir();
    let source_dir = root.path().join("single");
    let single = LogOptions::new()
        .segment_capacity(SEGMENT_CAPACITY)
        .single_producer(true);
    let log = Log::create(&source_dir, &single).unwrap();
    let model = Model::new(log.max_payload_len());
    common::produce(&log, &model, 0, 2000);
    let bridge = Bridge::start(test_config(root.path())).unwrap();
    let addr = bridge.local_addr();
    let replica_dir = root.path().join("replicas").join("single");
    let mut mirror =
        Mirror::open(addr, "single", &replica_dir, Start::Earliest, options()).unwrap();
    assert!(mirror
        .run_until(log.tail(), Duration::from_secs(60))
        .unwrap());
    drop(mirror);
    // No producer writes a replica (its mirror does), so it must not skip zeroing what it
    // recycles: it is made without the option, and its mirror still knows it for the
    // source's.
    let replica = Log::open(&replica_dir).unwrap();
    assert!(!replica.options().get_single_producer());
    let mirror = Mirror::open(addr, "single", &replica_dir, Start::Latest, options()).unwrap();
    assert_eq!(mirror.position(), log.tail());
    let mut consumer = replica.consumer(StartAt::Earliest).unwrap();
    let mut tracker = Tracker::new(model, &[(0, 2000)]);
    common::read_until_done(
        &mut consumer,
        &mut tracker,
        common::ReadMode::Poll,
        Duration::from_secs(60),
    );
    assert_data_areas_equal(&source_dir, &replica_dir);
}

/// A bridge child process; killed (SIGKILL) on drop.
struct BridgeProcess {
    child: Child,
    addr: SocketAddr,
}

impl BridgeProcess {
    fn start(root: &Path) -> BridgeProcess {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["--exact", "child_entry", "--nocapture", "--include-ignored"])
            .env(common::CHILD_ENV, "bridge")
            .env("LOGBUS_TEST_PARENT", std::process::id().to_string())
            .env("LOGBUS_TEST_ROOT", root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("BRIDGE-ADDR ") {
                    let _ = sender.send(addr.parse::<SocketAddr>().unwrap());
                }
            }
        });
        let mut process = BridgeProcess {
            child,
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        process.addr = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the bridge child says where it listens");
        process
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_bridge_killed_and_restarted_mid_stream_subscribers_resume_exactly() {
    let root = common::tempdir();
    let replicas = common::tempdir();
    let log_dir = root.path().join("orders");
    let log = create_log(&log_dir);
    let model = Model::new(log.max_payload_len());
    let count = 12_000u64;
    let counts = [(0u32, count)];
    let mut bridge = BridgeProcess::start(root.path());
    let current = Arc::new(Mutex::new(bridge.addr));
    let endpoint = {
        let current = current.clone();
        Endpoint::dynamic(move || Ok(*current.lock().unwrap()))
    };

    let target = Arc::new(AtomicU64::new(u64::MAX));
    let connections = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..3 {
        let mut remote =
            RemoteConsumer::connect(endpoint.clone(), "orders", Start::Earliest, options())
                .unwrap();
        let connections = connections.clone();
        threads.push((
            format!("consumer {i}"),
            std::thread::spawn(move || {
                let mut tracker = Tracker::new(model, &counts);
                let result = read_remote(&mut remote, &mut tracker);
                connections.lock().unwrap().push(remote.connections());
                result
            }),
        ));
    }
    let mut mirror = Mirror::open(
        endpoint.clone(),
        "orders",
        replicas.path().join("m"),
        Start::Earliest,
        options(),
    )
    .unwrap();
    {
        let target = target.clone();
        let connections = connections.clone();
        threads.push((
            "mirror".into(),
            std::thread::spawn(move || {
                let result = mirror_until(&mut mirror, &target);
                connections.lock().unwrap().push(mirror.connections());
                result
            }),
        ));
    }

    // The producer writes at a steady pace for a few seconds, while the bridge is killed
    // and restarted twice.
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let log = log.clone();
        let produced = produced.clone();
        std::thread::spawn(move || {
            let mut producer = log.producer().unwrap();
            producer.offer(&common::hello(0)).unwrap();
            let mut buf = vec![0u8; model.max_payload()];
            for seq in 0..count {
                let b = &mut buf[..model.len(0, seq)];
                model.write(0, seq, b);
                producer.offer(b).unwrap();
                produced.store(seq + 1, Ordering::SeqCst);
                if seq % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    for third in 1..=2 {
        while produced.load(Ordering::SeqCst) < count * third / 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(bridge); // SIGKILL, mid-stream
        std::thread::sleep(Duration::from_millis(300));
        bridge = BridgeProcess::start(root.path());
        *current.lock().unwrap() = bridge.addr;
    }
    producer.join().unwrap();
    target.store(log.tail(), Ordering::SeqCst);
    join_all(threads);
    assert_data_areas_equal(&log_dir, &replicas.path().join("m"));
    let connections = connections.lock().unwrap();
    assert!(
        connections.iter().all(|&c| c >= 3),
        "every subscriber reconnected after each kill: {connections:?}"
    );
}

#[test]
fn a_subscriber_that_stops_reading_slows_nobody_and_is_dropped_after_the_timeout() {
    let root = common::tempdir();
    let log = Log::create(
        root.path().join("big"),
        &LogOptions::new().segment_capacity(1 << 20),
    )
    .unwrap();
    let mut producer = log.producer().unwrap();
    let payload = vec![7u8; 16 << 10];
    let messages = 1536u64; // 24 MiB
    for _ in 0..messages {
        producer.offer(&payload).unwrap();
    }
    let mut config = test_config(root.path());
    let stall_timeout = Duration::from_secs(8);
    config.stall_timeout = stall_timeout;
    config.heartbeat_interval = Duration::from_millis(500);
    let bridge = Bridge::start(config).unwrap();
    let addr = bridge.local_addr();

    // The stuck subscriber: asks for everything, then never reads (nor answers heartbeats).
    let mut stuck = TcpStream::connect(addr).unwrap();
    let request = protocol::encode_request(&Request {
        log: "big".into(),
        start: Start::Earliest,
        flags: 0,
        token: Vec::new(),
    })
    .unwrap();
    stuck.write_all(&request).unwrap();
    let stuck_since = Instant::now();
    std::thread::sleep(Duration::from_millis(200));

    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mut remote =
                RemoteConsumer::connect(addr, "big", Start::Earliest, options()).unwrap();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while n < messages {
                    match remote.wait(Some(STALL)).unwrap() {
                        Some(m) => assert_eq!(m.payload().len(), 16 << 10),
                        None => panic!("stalled after {n} messages"),
                    }
                    n += 1;
                }
                Instant::now()
            })
        })
        .collect();
    let finished: Vec<Instant> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    let last = *finished.iter().max().unwrap();
    assert_eq!(
        bridge.stats().dropped,
        0,
        "the others finished only after the stuck subscriber was dropped: it held them up"
    );
    assert!(last - stuck_since < stall_timeout);

    // The stuck one goes within the timeout (and a little).
    let deadline = Instant::now() + stall_timeout + Duration::from_secs(10);
    while bridge.stats().dropped < 1 {
        assert!(
            Instant::now() < deadline,
            "not dropped: {:?}",
            bridge.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stuck_since.elapsed() >= stall_timeout);
    // What it gets now is what was in the socket buffers, then the end.
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stuck.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n as u64,
        }
    }
    assert!(received < log.tail(), "{received} of {}", log.tail());
}

/// Sends `bytes` on a fresh connection, then reads until the bridge closes it; returns the
/// error message it sent.
fn refused(addr: SocketAddr, bytes: &[u8], pause: Option<Duration>) -> (ErrorCode, u64, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(bytes);
    if let Some(pause) = pause {
        std::thread::sleep(pause);
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the answer: {e} (got {answer:?})"),
        }
    }
    // A welcome may come first (for a request that went wrong later).
    let mut at = 0;
    loop {
        assert!(answer.len() >= at + 24, "no error message in {answer:?}");
        let header: MessageHeader = bytemuck::pod_read_unaligned(&answer[at..at + 24]);
        let end = at + 24 + header.length as usize;
        if header.kind == message_kind::ERROR {
            assert_eq!(end, answer.len(), "the connection closes after the error");
            let text = String::from_utf8(answer[at + 24..end].to_vec()).unwrap();
            let code = ErrorCode::from_u32(header.value as u32).unwrap();
            return (code, header.position, text);
        }
        at = end;
    }
}

fn request_bytes(log: &str, start: Start, token: &[u8]) -> Vec<u8> {
    protocol::encode_request(&Request {
        log: log.into(),
        start,
        flags: 0,
        token: token.to_vec(),
    })
    .unwrap()
}

#[test]
fn bad_requests_get_an_error_and_a_closed_connection_while_the_bridge_serves_the_rest() {
    let root = common::tempdir();
    let log = create_log(&root.path().join("orders"));
    // A log whose first segment retention deleted.
    let old = create_log(&root.path().join("old"));
    let mut old_producer = old.producer().unwrap();
    while old.tail() < 3 * SEGMENT_CAPACITY {
        old_producer.offer(&[1u8; 1000]).unwrap();
    }
    std::fs::remove_file(
        root.path()
            .join("old")
            .join(logbus::format::segment_file_name(0)),
    )
    .unwrap();
    let mut config = test_config(root.path());
    config.token = Some(b"s3cret".to_vec());
    config.request_timeout = Duration::from_millis(500);
    config.log_connections = true;
    let bridge = Bridge::start(config).unwrap();
    let addr = bridge.local_addr();

    let mut good = RemoteConsumer::connect(
        addr,
        "orders",
        Start::Earliest,
        options().token(&b"s3cret"[..]),
    )
    .unwrap();
    let mut producer = log.producer().unwrap();
    producer.offer(b"before").unwrap();
    assert_eq!(
        good.wait(Some(Duration::from_secs(5)))
            .unwrap()
            .unwrap()
            .payload(),
        b"before"
    );

    let good_request = request_bytes("orders", Start::Earliest, b"s3cret");
    let mut v2 = good_request.clone();
    v2[8..10].copy_from_slice(&2u16.to_le_bytes());
    let mut write = good_request.clone();
    write[10..12].copy_from_slice(&2u16.to_le_bytes());
    let mut oversized = good_request[..32].to_vec();
    oversized[14..16].copy_from_slice(&4000u16.to_le_bytes());
    oversized.extend(std::iter::repeat_n(b'x', 4000));
    let mut keepalive_garbage = good_request.clone();
    keepalive_garbage.extend_from_slice(&[0xee; 16]);
    let cases: Vec<(&str, Vec<u8>, ErrorCode, &str)> = vec![
        (
            "malformed",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ErrorCode::Malformed,
            "LBBRIDGE",
        ),
        (
            "garbage",
            vec![0u8; 64],
            ErrorCode::Malformed,
            "not a logbus bridge request",
        ),
        ("oversized", oversized, ErrorCode::TooLarge, "4000 bytes"),
        (
            "wrong version",
            v2,
            ErrorCode::UnsupportedVersion,
            "version 2",
        ),
        ("a write", write, ErrorCode::NotARead, "only subscriptions"),
        (
            "wrong token",
            request_bytes("orders", Start::Earliest, b"guess"),
            ErrorCode::Unauthorized,
            "wrong token",
        ),
        (
            "no token",
            request_bytes("orders", Start::Earliest, b""),
            ErrorCode::Unauthorized,
            "requires a token",
        ),
        (
            "unknown log",
            request_bytes("nope", Start::Earliest, b"s3cret"),
            ErrorCode::UnknownLog,
            "'nope'",
        ),
        (
            "escaping name",
            {
                let mut r = request_bytes("xx", Start::Earliest, b"s3cret");
                r[32..34].copy_from_slice(b"..");
                r
            },
            ErrorCode::Malformed,
            "dot",
        ),
        (
            "deleted position",
            request_bytes("old", Start::Position(0), b"s3cret"),
            ErrorCode::PositionDeleted,
            "earliest position is 65536",
        ),
        (
            "keepalive garbage",
            keepalive_garbage,
            ErrorCode::Malformed,
            "keepalives",
        ),
    ];
    for (name, bytes, code, text) in &cases {
        let (got, position, message) = refused(addr, bytes, None);
        assert_eq!(got, *code, "{name}: {message}");
        assert!(message.contains(text), "{name}: {message:?} lacks {text:?}");
        if *code == ErrorCode::PositionDeleted {
            assert_eq!(position, SEGMENT_CAPACITY);
        }
    }
    // Half a request, then nothing: refused when the request timeout passes.
    let (code, _, message) = refused(addr, &good_request[..20], Some(Duration::from_millis(100)));
    assert_eq!(code, ErrorCode::Timeout, "{message}");

    // The good subscriber was served all along.
    producer.offer(b"after").unwrap();
    let m = good.wait(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!(m.payload(), b"after");
    assert_eq!(good.connections(), 1);
    let stats = bridge.stats();
    assert_eq!(stats.refused as usize, cases.len() + 1, "{stats:?}");
    assert_eq!(stats.dropped, 0);
}

#[test]
fn the_bridge_limits_its_subscribers() {
    let root = common::tempdir();
    create_log(&root.path().join("l"));
    let mut config = test_config(root.path());
    config.max_subscribers = 2;
    let bridge = Bridge::start(config).unwrap();
    let addr = bridge.local_addr();
    let no_retry = options().reconnect(false);
    let a = RemoteConsumer::connect(addr, "l", Start::Earliest, no_retry.clone()).unwrap();
    let _b = RemoteConsumer::connect(addr, "l", Start::Earliest, no_retry.clone()).unwrap();
    let (code, _, message) = refused(addr, &request_bytes("l", Start::Earliest, b""), None);
    assert_eq!(code, ErrorCode::TooManySubscribers, "{message}");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match RemoteConsumer::connect(addr, "l", Start::Earliest, no_retry.clone()) {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_bridge_pads_a_dead_producers_claim_instead_of_waiting_for_it_forever() {
    let root = common::tempdir();
    let log = create_log(&root.path().join("l"));
    let mut producer = log.producer().unwrap();
    producer.offer(b"one").unwrap();
    // A claim that will never be committed while the producer lives: after the claim
    // timeout the bridge pads it, as a consumer would.
    let claim = producer.claim(10).unwrap();
    let mut other = log.producer().unwrap();
    other.offer(b"two").unwrap();
    let mut config = test_config(root.path());
    config.claim_timeout = Duration::from_millis(300);
    let bridge = Bridge::start(config).unwrap();
    let mut remote =
        RemoteConsumer::connect(bridge.local_addr(), "l", Start::Earliest, options()).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = remote
            .wait(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("the held claim is padded after the timeout");
        got.push(m.payload().to_vec());
    }
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    assert!(claim.commit().is_err(), "the revoked claim's commit fails");
}

#[test]
fn messages_larger_than_the_receive_buffer_grow_it_for_consumers_and_mirrors() {
    let root = common::tempdir();
    let log = Log::create(
        root.path().join("big"),
        &LogOptions::new().segment_capacity(32 << 20),
    )
    .unwrap();
    let mut producer = log.producer().unwrap();
    let mut sent = Vec::new();
    for i in 0..6u64 {
        let len = if i % 2 == 0 { (3 << 20) + 5 } else { 100 };
        let payload: Vec<u8> = (0..len).map(|j| (j as u64 * 7 + i) as u8).collect();
        sent.push((producer.offer(&payload).unwrap(), payload));
    }
    let bridge = Bridge::start(test_config(root.path())).unwrap();
    let mut remote =
        RemoteConsumer::connect(bridge.local_addr(), "big", Start::Earliest, options()).unwrap();
    for (position, payload) in &sent {
        let m = remote.wait(Some(Duration::from_secs(30))).unwrap().unwrap();
        assert_eq!(m.position(), *position);
        assert!(m.payload() == &payload[..], "message at {position}");
        assert_eq!(m.payload().as_ptr() as usize % 8, 0);
    }
    let replica = root.path().join("replicas").join("big");
    let mut mirror = Mirror::open(
        bridge.local_addr(),
        "big",
        &replica,
        Start::Earliest,
        options(),
    )
    .unwrap();
    assert!(mirror
        .run_until(log.tail(), Duration::from_secs(60))
        .unwrap());
    assert_data_areas_equal(&root.path().join("big"), &replica);
}
