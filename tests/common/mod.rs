//! Helpers shared by the integration tests: temporary log directories, child processes that
//! re-execute the test binary, and a model of verifiable messages (content derived from a
//! producer id and a sequence number) with the producer and consumer loops that use it.
//!
//! Each test file includes this with `mod common;` and uses a part of it.
#![allow(dead_code)]

use logbus::{Consumer, Log, Message};
use memmap2::MmapMut;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Temporary directories.

/// A fresh temporary directory under `/dev/shm` (the in-memory mode), removed on drop; under
/// the system temporary directory where there is no `/dev/shm`.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("logbus-test-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::Builder::new().prefix("logbus-test-").tempdir())
        .expect("a temporary directory")
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// Names the role of a child process; absent in the test process itself.
pub const CHILD_ENV: &str = "LOGBUS_TEST_CHILD";
/// The pid of the process that spawned a child, so the child can tell it was orphaned.
const PARENT_ENV: &str = "LOGBUS_TEST_PARENT";
/// Prefix of the lines a child prints for its parent to read.
const RESULT_PREFIX: &str = "LOGBUS-RESULT";

/// The role this process was started for, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// First thing a child does: die with its parent (so no child outlives a test that was killed
/// or failed), and quit at once if the parent is already gone.
pub fn child_init() {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if let Ok(parent) = std::env::var(PARENT_ENV) {
        if parent.parse::<u32>().ok() != Some(std::os::unix::process::parent_id()) {
            std::process::exit(3);
        }
    }
}

/// A required environment variable of a child.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child started without {name}"))
}

/// A required environment variable of a child, parsed.
pub fn env_parse<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let value = env(name);
    value
        .parse()
        .unwrap_or_else(|e| panic!("{name}={value}: {e:?}"))
}

/// Prints one result line for the parent to collect with [`Finished::results`].
pub fn report(pairs: &[(&str, String)]) {
    let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // On a line of its own: the test harness may have printed half a line before.
    println!("\n{RESULT_PREFIX} {}", fields.join(" "));
}

/// Child side of a start line: announces `name` as ready in `sync_dir`, then waits (spinning,
/// so that all children leave at nearly the same instant) until the parent says go.
pub fn rendezvous(sync_dir: &Path, name: &str) {
    std::fs::write(sync_dir.join(format!("ready.{name}")), b"").expect("write the ready file");
    let go = sync_dir.join("go");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !go.exists() {
        assert!(Instant::now() < deadline, "no go from the parent");
        std::thread::yield_now();
    }
}

/// A child process that has exited, with everything it printed.
pub struct Finished {
    pub name: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The key=value pairs of every result line the child printed, in order.
    pub fn results(&self) -> Vec<HashMap<String, String>> {
        self.stdout
            .lines()
            .filter_map(|line| Some(&line[line.find(RESULT_PREFIX)? + RESULT_PREFIX.len()..]))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    /// The only result line, which must be there.
    pub fn result(&self) -> HashMap<String, String> {
        let mut results = self.results();
        assert_eq!(
            results.len(),
            1,
            "{}: expected one result line\n{self}",
            self.name
        );
        results.pop().unwrap()
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "--- child {} ({})", self.name, self.status)?;
        writeln!(f, "--- stdout:\n{}", self.stdout)?;
        writeln!(f, "--- stderr:\n{}", self.stderr)
    }
}

struct Running {
    name: String,
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
}

impl Running {
    fn finish(&mut self) -> Finished {
        let status = match self.status {
            Some(status) => status,
            None => self.child.wait().expect("wait for a child"),
        };
        let collect = |h: Option<JoinHandle<String>>| h.map(|h| h.join().unwrap_or_default());
        Finished {
            name: self.name.clone(),
            status,
            stdout: collect(self.stdout.take()).unwrap_or_default(),
            stderr: collect(self.stderr.take()).unwrap_or_default(),
        }
    }
}

/// A command that runs this test binary again as a child in `role`: with only the ignored
/// `child_entry` test selected, which works the same under `cargo test` and under
/// cargo-nextest, and told who its parent is (see [`child_init`]).
pub fn child_command(role: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "child_entry",
            "--nocapture",
            "--include-ignored",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, role)
        .env(PARENT_ENV, std::process::id().to_string());
    command
}

/// Child processes of one test, each running this test binary's `child_entry` test. Every
/// child still running when this is dropped (a failed assertion, a timeout) is killed and
/// reaped, so no test leaves processes behind.
pub struct Children {
    running: Vec<Running>,
}

impl Default for Children {
    fn default() -> Self {
        Self::new()
    }
}

impl Children {
    pub fn new() -> Self {
        Children {
            running: Vec::new(),
        }
    }

    /// Starts a child named `name` (for messages) in `role` (see [`child_command`]), with
    /// extra environment.
    pub fn spawn(&mut self, name: &str, role: &str, envs: &[(&str, String)]) {
        let mut command = child_command(role);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn a child process");
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = r.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = child.stdout.take().map(|o| drain(Box::new(o)));
        let stderr = child.stderr.take().map(|e| drain(Box::new(e)));
        self.running.push(Running {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            status: None,
        });
    }

    /// Polls every child once; returns the first that exited unsuccessfully.
    fn poll_failures(&mut self) -> Option<usize> {
        for (i, r) in self.running.iter_mut().enumerate() {
            if r.status.is_none() {
                r.status = r.child.try_wait().expect("try_wait on a child");
            }
            if r.status.is_some_and(|s| !s.success()) {
                return Some(i);
            }
        }
        None
    }

    /// Kills every child, reaps them all, and panics with their output.
    fn fail(&mut self, why: &str) -> ! {
        self.kill_all();
        let report: String = self
            .running
            .iter_mut()
            .map(|r| r.finish().to_string())
            .collect();
        self.running.clear();
        panic!("{why}\n{report}");
    }

    fn kill_all(&mut self) {
        for r in &mut self.running {
            if r.status.is_none() {
                let _ = r.child.kill();
            }
        }
    }

    /// Parent side of [`rendezvous`]: waits until every child named in `names` is ready,
    /// then lets them all go at once.
    pub fn start_together(&mut self, sync_dir: &Path, names: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.poll_failures() {
                let why = format!("child {} failed before the start", self.running[i].name);
                self.fail(&why);
            }
            if names
                .iter()
                .all(|n| sync_dir.join(format!("ready.{n}")).exists())
            {
                break;
            }
            if Instant::now() > deadline {
                self.fail("children not ready in time");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::fs::write(sync_dir.join("go"), b"").expect("write the go file");
    }

    /// Waits for every child to exit successfully. If one fails, or `timeout` passes, every
    /// child is killed and the test fails with all of their output.
    pub fn wait_all(mut self, timeout: Duration) -> Vec<Finished> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.poll_failures() {
                let why = format!("child {} failed", self.running[i].name);
                self.fail(&why);
            }
            if self.running.iter().all(|r| r.status.is_some()) {
                break;
            }
            if Instant::now() > deadline {
                self.fail(&format!("children still running after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = self.running.iter_mut().map(Running::finish).collect();
        self.running.clear();
        finished
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
        for r in &mut self.running {
            let _ = r.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verifiable messages.

/// First bytes of the message a producer sends before its numbered ones, followed by its id
/// (`u32`): it tells consumers which producer slot is which producer.
pub const HELLO: [u8; 8] = *b"LBHELLO\0";
const HELLO_LEN: usize = 12;
/// A message of `len` bytes (at least 8) for tests of one producer: the sequence number in
/// its first 8 bytes, `seq % 251` in every other.
pub fn sequenced(seq: u64, len: usize) -> Vec<u8> {
    let mut payload = vec![(seq % 251) as u8; len];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload
}

/// The sequence number in the first 8 bytes of `payload`, after checking that the whole
/// payload is what `message` makes for that number.
pub fn sequence_of(payload: &[u8], message: impl Fn(u64) -> Vec<u8>) -> u64 {
    let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes of sequence"));
    assert_eq!(payload, &message(seq)[..], "message {seq} arrived damaged");
    seq
}

/// Messages of at least this length start with the producer id and sequence number.
const TAGGED_LEN: usize = 12;
/// The model never makes messages larger than this, whatever the log allows.
pub const MAX_MODEL_PAYLOAD: usize = 16 * 1024;
const PATTERN_WINDOWS: usize = 1 << 16;

/// The SplitMix64 finaliser: a good 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn seed(p: u32, seq: u64) -> u64 {
    mix((u64::from(p) << 48) ^ seq ^ 0x6c6f_6762_7573)
}

fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state = 0x1234_5678u64;
        (0..PATTERN_WINDOWS + MAX_MODEL_PAYLOAD)
            .map(|_| {
                state = mix(state);
                state as u8
            })
            .collect()
    })
}

/// Which messages producer `p` sends, message by message: length and every byte follow
/// from `(p, seq)`, so a consumer can check each one without any other information.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    max_payload: usize,
}

impl Model {
    /// A model whose largest messages are just under `max_payload` (the log's limit).
    pub fn new(max_payload: usize) -> Model {
        Model {
            max_payload: max_payload.min(MAX_MODEL_PAYLOAD),
        }
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Length of message `seq` of producer `p`: 0..=300 bytes, and about one in a thousand
    /// within 16 bytes of the largest payload.
    pub fn len(&self, p: u32, seq: u64) -> usize {
        let s = seed(p, seq);
        if s % 1024 == 0 {
            self.max_payload - ((s >> 40) % 16) as usize
        } else {
            ((s >> 20) % 301) as usize
        }
    }

    fn body(&self, p: u32, seq: u64, len: usize) -> &'static [u8] {
        let offset = (seed(p, seq) >> 8) as usize % PATTERN_WINDOWS;
        &pattern()[offset..offset + len]
    }

    /// Writes message `seq` of producer `p` into `buf`, whose length must be
    /// [`Model::len`].
    pub fn write(&self, p: u32, seq: u64, buf: &mut [u8]) {
        let len = buf.len();
        if len >= TAGGED_LEN {
            buf[..4].copy_from_slice(&p.to_le_bytes());
            buf[4..12].copy_from_slice(&seq.to_le_bytes());
            buf[12..].copy_from_slice(self.body(p, seq, len - TAGGED_LEN));
        } else {
            buf.copy_from_slice(self.body(p, seq, len));
        }
    }

    /// Checks that `payload` is exactly message `seq` of producer `p`.
    pub fn check(&self, p: u32, seq: u64, payload: &[u8]) -> Result<(), String> {
        let len = self.len(p, seq);
        if payload.len() != len {
            return Err(format!(
                "length {} instead of {len}{}",
                payload.len(),
                describe(payload)
            ));
        }
        let intact = if len >= TAGGED_LEN {
            payload[..4] == p.to_le_bytes()
                && payload[4..12] == seq.to_le_bytes()
                && payload[12..] == *self.body(p, seq, len - TAGGED_LEN)
        } else {
            payload == self.body(p, seq, len)
        };
        if intact {
            Ok(())
        } else {
            Err(format!("content differs{}", describe(payload)))
        }
    }
}

fn describe(payload: &[u8]) -> String {
    if payload.len() >= TAGGED_LEN {
        format!(
            " (it is tagged producer {} message {})",
            u32::from_le_bytes(payload[..4].try_into().unwrap()),
            u64::from_le_bytes(payload[4..12].try_into().unwrap())
        )
    } else {
        String::new()
    }
}

/// The hello message of producer `p`.
pub fn hello(p: u32) -> [u8; HELLO_LEN] {
    let mut hello = [0u8; HELLO_LEN];
    hello[..8].copy_from_slice(&HELLO);
    hello[8..].copy_from_slice(&p.to_le_bytes());
    hello
}

fn parse_hello(payload: &[u8]) -> Option<u32> {
    (payload.len() == HELLO_LEN && payload[..8] == HELLO)
        .then(|| u32::from_le_bytes(payload[8..].try_into().unwrap()))
}

/// What [`produce`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Produced {
    /// Position of the hello message.
    pub first: u64,
    /// Position of the last message (or message set).
    pub last: u64,
    pub offers: u64,
    pub claims: u64,
    pub batches: u64,
    pub aborted: u64,
}

/// Records of a batch starting at `seq`: as many as fit in one message set (at most
/// `want`); returns how many and the payload bytes they need.
fn plan_batch(model: &Model, p: u32, seq: u64, count: u64, want: u64) -> (u64, usize) {
    let (mut n, mut size) = (0u64, 0usize);
    while n < want && seq + n < count {
        let next = size.next_multiple_of(4) + 4 + model.len(p, seq + n);
        if next > model.max_payload {
            break;
        }
        size = next;
        n += 1;
    }
    (n, size)
}

/// Sends the hello of producer `p`, then its messages `0..count`, mixing every way in:
/// `offer`, `offer_pod`, `claim` + commit, `offer_batch`, `batch` + push + commit (with room
/// to spare, which becomes padding), and claims and batches dropped uncommitted (holding
/// copies of the next messages, so a consumer that delivered one would see a duplicate). The
/// last operation is always a commit.
pub fn produce(log: &Log, model: &Model, p: u32, count: u64) -> Produced {
    let mut producer = log.producer().expect("make a producer");
    let mut done = Produced {
        first: producer.offer(&hello(p)).expect("offer the hello"),
        ..Produced::default()
    };
    done.last = done.first;
    let mut rng = mix(0xc0ff_ee00 ^ u64::from(p));
    let mut buf = vec![0u8; model.max_payload];
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut seq = 0u64;
    let context = |what: &str, seq: u64| format!("producer {p}: {what} of message {seq}");
    while seq < count {
        rng = mix(rng);
        let len = model.len(p, seq);
        let choice = rng % 100;
        let batch_want = 1 + (rng >> 12) % if rng & (1 << 40) != 0 { 64 } else { 8 };
        let (n, size) = plan_batch(model, p, seq, count, batch_want);
        match choice {
            60..=64 => {
                let mut claim = producer
                    .claim(len)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("claim", seq)));
                model.write(p, seq, &mut claim);
                drop(claim);
                done.aborted += 1;
            }
            65..=69 if n > 0 => {
                let mut batch = producer
                    .batch(size)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("batch", seq)));
                for k in seq..seq + n {
                    let b = &mut buf[..model.len(p, k)];
                    model.write(p, k, b);
                    batch.push(b).expect("the planned records fit");
                }
                drop(batch);
                done.aborted += 1;
            }
            70..=84 if n > 0 => {
                records.resize_with(n as usize, Vec::new);
                for (record, k) in records.iter_mut().zip(seq..) {
                    record.resize(model.len(p, k), 0);
                    model.write(p, k, record);
                }
                done.last = producer
                    .offer_batch(&records[..n as usize])
                    .unwrap_or_else(|e| panic!("{}: {e}", context("offer_batch", seq)));
                done.batches += 1;
                seq += n;
            }
            85..=99 if n > 0 => {
                let slack = (rng >> 24) as usize % 64;
                let capacity = (size + slack).min(model.max_payload);
                let mut batch = producer
                    .batch(capacity)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("batch", seq)));
                for k in seq..seq + n {
                    let b = &mut buf[..model.len(p, k)];
                    model.write(p, k, b);
                    batch.push(b).expect("the planned records fit");
                }
                done.last = batch
                    .commit()
                    .unwrap_or_else(|e| panic!("{}: {e}", context("batch commit", seq)));
                done.batches += 1;
                seq += n;
            }
            40..=59 => {
                let mut claim = producer
                    .claim(len)
                    .unwrap_or_else(|e| panic!("{}: {e}", context("claim", seq)));
                assert!(
                    claim.iter().all(|&b| b == 0),
                    "{}: a fresh claim is not zeroed",
                    context("claim", seq)
                );
                model.write(p, seq, &mut claim);
                done.last = claim
                    .commit()
                    .unwrap_or_else(|e| panic!("{}: {e}", context("commit", seq)));
                done.claims += 1;
                seq += 1;
            }
            _ => {
                let b = &mut buf[..len];
                model.write(p, seq, b);
                let offered = if len == 16 {
                    let value: [u8; 16] = (&*b).try_into().unwrap();
                    producer.offer_pod(&value)
                } else {
                    producer.offer(b)
                };
                done.last = offered.unwrap_or_else(|e| panic!("{}: {e}", context("offer", seq)));
                done.offers += 1;
                seq += 1;
            }
        }
    }
    done
}

/// Checks, message by message, what a consumer reads against the producers it expects:
/// each producer's hello first, then its messages `0..count` exactly once, intact and in
/// order; positions strictly increasing. Folds (producer, sequence, position) of every
/// message into a hash, so two readers can compare the whole order they saw.
pub struct Tracker {
    model: Model,
    /// Producer id → index in `counts`/`next`/`greeted`.
    ids: HashMap<u32, usize>,
    counts: Vec<u64>,
    next: Vec<u64>,
    greeted: Vec<bool>,
    slots: HashMap<u16, usize>,
    pub hash: u64,
    /// Numbered messages seen (hellos not counted).
    pub messages: u64,
    pub last_position: Option<u64>,
}

impl Tracker {
    /// Expects the producers `(id, count)` given.
    pub fn new(model: Model, producers: &[(u32, u64)]) -> Tracker {
        Tracker {
            model,
            ids: producers
                .iter()
                .enumerate()
                .map(|(i, &(id, _))| (id, i))
                .collect(),
            counts: producers.iter().map(|&(_, c)| c).collect(),
            next: vec![0; producers.len()],
            greeted: vec![false; producers.len()],
            slots: HashMap::new(),
            hash: 0x6c6f_6762_7573,
            messages: 0,
            last_position: None,
        }
    }

    /// Whether every expected message has been seen.
    pub fn done(&self) -> bool {
        self.greeted.iter().all(|&g| g) && self.next == self.counts
    }

    fn fold(&mut self, x: u64) {
        self.hash = mix(self.hash ^ x);
    }

    /// Checks one delivered message.
    pub fn observe(&mut self, m: &Message<'_>) -> Result<(), String> {
        let position = m.position();
        if let Some(last) = self.last_position {
            if position <= last {
                return Err(format!(
                    "message at position {position} delivered after one at {last}"
                ));
            }
        }
        self.last_position = Some(position);
        if let Some(id) = parse_hello(m.payload()) {
            let Some(&i) = self.ids.get(&id) else {
                return Err(format!("hello of unexpected producer {id} at {position}"));
            };
            if std::mem::replace(&mut self.greeted[i], true) {
                return Err(format!("second hello of producer {id} at {position}"));
            }
            self.slots.insert(m.producer(), i);
            self.fold(u64::from(id) << 32 | 0xffff_ffff);
            self.fold(position);
            return Ok(());
        }
        let Some(&i) = self.slots.get(&m.producer()) else {
            return Err(format!(
                "message at {position} from producer slot {} that sent no hello{}",
                m.producer(),
                describe(m.payload())
            ));
        };
        let id = *self.ids.iter().find(|&(_, &v)| v == i).unwrap().0;
        let seq = self.next[i];
        if seq >= self.counts[i] {
            return Err(format!(
                "producer {id} sent only {} messages, but another came at {position}{}",
                self.counts[i],
                describe(m.payload())
            ));
        }
        self.model
            .check(id, seq, m.payload())
            .map_err(|e| format!("at position {position}, producer {id} message {seq}: {e}"))?;
        if m.timestamp_ns().is_none() {
            return Err(format!("message at {position} has no timestamp"));
        }
        self.next[i] += 1;
        self.messages += 1;
        self.fold(u64::from(id) << 32 | (seq & 0xffff_ffff));
        self.fold(position);
        Ok(())
    }

    /// A one-line account of progress, for failure messages.
    pub fn progress(&self) -> String {
        format!(
            "{} messages; next per producer {:?} of {:?}; greeted {:?}",
            self.messages, self.next, self.counts, self.greeted
        )
    }
}

/// How [`read_until_done`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// `wait`, one message at a time.
    Wait,
    /// `wait_batch` of up to 256 messages.
    WaitBatch,
    /// `poll` and `poll_batch`, yielding the CPU when there is nothing.
    Poll,
}

impl std::str::FromStr for ReadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(ReadMode::Wait),
            "batch" => Ok(ReadMode::WaitBatch),
            "poll" => Ok(ReadMode::Poll),
            other => Err(format!("unknown read mode {other}")),
        }
    }
}

/// Reads with `consumer` until `tracker` has seen every expected message; panics on any
/// error, any wrong message, or if nothing arrives for `stall`. The batch modes may read past
/// the last expected message (and fail on it): to read on with the same consumer afterwards,
/// use [`ReadMode::Wait`].
pub fn read_until_done(
    consumer: &mut Consumer,
    tracker: &mut Tracker,
    mode: ReadMode,
    stall: Duration,
) {
    let mut failure: Option<String> = None;
    let mut last_progress = Instant::now();
    let mut polls = 0u64;
    while !tracker.done() {
        let delivered = match mode {
            ReadMode::Wait => match consumer.wait(Some(stall)) {
                Ok(Some(m)) => {
                    if let Err(e) = tracker.observe(&m) {
                        failure = Some(e);
                    }
                    1
                }
                Ok(None) => 0,
                Err(e) => panic!("wait failed at {}: {e}", consumer.position()),
            },
            ReadMode::WaitBatch => consumer
                .wait_batch(256, Some(stall), |m| {
                    if failure.is_none() {
                        if let Err(e) = tracker.observe(&m) {
                            failure = Some(e);
                        }
                    }
                })
                .unwrap_or_else(|e| panic!("wait_batch failed: {e}")),
            ReadMode::Poll => {
                polls += 1;
                let n = if polls % 2 == 0 {
                    match consumer.poll() {
                        Ok(Some(m)) => {
                            if let Err(e) = tracker.observe(&m) {
                                failure = Some(e);
                            }
                            1
                        }
                        Ok(None) => 0,
                        Err(e) => panic!("poll failed at {}: {e}", consumer.position()),
                    }
                } else {
                    consumer
                        .poll_batch(64, |m| {
                            if failure.is_none() {
                                if let Err(e) = tracker.observe(&m) {
                                    failure = Some(e);
                                }
                            }
                        })
                        .unwrap_or_else(|e| panic!("poll_batch failed: {e}"))
                };
                if n == 0 {
                    std::thread::yield_now();
                }
                n
            }
        };
        if let Some(e) = failure {
            panic!("{e}\n(after {})", tracker.progress());
        }
        if delivered > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= stall {
            panic!(
                "nothing arrived for {stall:?} at position {} ({consumer:?}); {}",
                consumer.position(),
                tracker.progress()
            );
        }
    }
}

/// What one reader saw, comparable between readers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub hash: u64,
    pub messages: u64,
    pub position: u64,
}

impl Summary {
    pub fn to_pairs(&self, who: &str) -> Vec<(&'static str, String)> {
        vec![
            ("who", who.to_string()),
            ("hash", format!("{:016x}", self.hash)),
            ("messages", self.messages.to_string()),
            ("position", self.position.to_string()),
        ]
    }

    pub fn from_result(result: &HashMap<String, String>) -> Summary {
        let get = |k: &str| {
            result
                .get(k)
                .unwrap_or_else(|| panic!("result without {k}: {result:?}"))
        };
        Summary {
            hash: u64::from_str_radix(get("hash"), 16).expect("hex hash"),
            messages: get("messages").parse().expect("a count"),
            position: get("position").parse().expect("a position"),
        }
    }
}

/// Reads everything the producers `(id, count)` sent, from `start`, checking it all; then
/// checks that nothing follows and returns the summary (its position is where the reader
/// stopped, after any trailing padding).
pub fn read_all(
    log: &Log,
    start: logbus::StartAt,
    model: Model,
    producers: &[(u32, u64)],
    mode: ReadMode,
    stall: Duration,
) -> Summary {
    let mut consumer = log.consumer(start).expect("make a consumer");
    consumer.verify_checksums(true);
    let mut tracker = Tracker::new(model, producers);
    read_until_done(&mut consumer, &mut tracker, mode, stall);
    if let Some(m) = consumer.poll().expect("poll after the end") {
        panic!(
            "an extra message at {} after all {} expected ones",
            m.position(),
            tracker.messages
        );
    }
    Summary {
        hash: tracker.hash,
        messages: tracker.messages,
        position: consumer.position(),
    }
}

/// Every file name in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A temporary directory under `/dev/shm`, where logs recycle; `None` (the test skips,
/// saying so) where there is none.
pub fn tmpfs_tempdir() -> Option<tempfile::TempDir> {
    let dir = tempdir();
    if dir.path().starts_with("/dev/shm") {
        Some(dir)
    } else {
        println!("skipped: recycling happens on a tmpfs, and there is no /dev/shm here");
        None
    }
}

/// Records the inode of every segment file now in `dir` under its base position.
pub fn note_inodes(dir: &Path, inodes: &mut HashMap<u64, u64>) {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let Some(base) = name.strip_suffix(".seg").and_then(|b| b.parse().ok()) else {
            continue;
        };
        if let Ok(metadata) = entry.metadata() {
            inodes.entry(base).or_insert(metadata.ino());
        }
    }
}

/// Base positions whose file was a file an earlier segment had had: recycled segments.
pub fn recycled(inodes: &HashMap<u64, u64>) -> Vec<u64> {
    let mut bases: Vec<u64> = inodes
        .iter()
        .filter(|&(&base, ino)| inodes.iter().any(|(&other, i)| other < base && i == ino))
        .map(|(&base, _)| base)
        .collect();
    bases.sort_unstable();
    bases
}

/// Maps the file at `path` that child processes count their progress in, one `u64` a
/// producer; sized for `producers` (and so made) when given.
pub fn map_progress(path: &str, producers: Option<usize>) -> MmapMut {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    if let Some(producers) = producers {
        file.set_len(producers as u64 * 8).unwrap();
    }
    // SAFETY: a shared mapping of a file only these test processes use, and only through
    // the aligned atomics `progress_counter` hands out.
    unsafe { MmapMut::map_mut(&file) }.unwrap()
}

/// The counter of producer `id` in a mapping from [`map_progress`].
pub fn progress_counter(progress: &MmapMut, id: u64) -> &AtomicU64 {
    let offset = id as usize * 8;
    assert!(offset + 8 <= progress.len());
    // SAFETY: page-aligned mapping, 8-aligned offset inside it, valid for any bit pattern; all
    // processes access it atomically.
    unsafe { &*(progress.as_ptr().add(offset) as *const AtomicU64) }
}

/// The path of the segment file whose data starts at `base`.
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(logbus::format::segment_file_name(base))
}

// ---------------------------------------------------------------------------------------------
// A tmpfs of the test's own (to fill a file system on purpose), unmounted on drop.

pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `path`, or prints why not and returns `None` (not root,
    /// no permission to mount in this container).
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(path).unwrap();
        let target = CString::new(path.as_os_str().as_bytes()).unwrap();
        let data = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            println!(
                "SKIPPED: cannot mount a tmpfs at {} to fill it up: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path. MNT_DETACH: gone even if a mapping is still open.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}
