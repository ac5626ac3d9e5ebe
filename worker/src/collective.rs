//! Ring all-reduce over TCP between the replicas of a data-parallel trial.
//!
//! The K replicas form a ring: each connects to the next and accepts the previous. A sum
//! of n floats takes K − 1 reduce-scatter steps (each replica passes one n/K chunk on and
//! adds the chunk it receives) and K − 1 all-gather steps (the finished chunks travel
//! round), so every replica sends 2·(K − 1)/K · n floats per exchange whatever K is, and
//! all replicas end with bit-identical sums: each chunk is summed once, on one replica,
//! and copied to the others.
//!
//! A peer that dies makes the exchange fail at once (its connection closes); one that is
//! cut off, after the ring's timeout with no byte moving. A replica whose attempt is
//! stopped (the scheduler stops the others of an attempt that lost a replica) leaves a
//! blocked exchange within [`POLL`], so it never holds its worker while it waits.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tessera_experiments::data_parallel::Reducer;

const MAGIC: &[u8; 8] = b"TSRRING1";

/// One replica's place in the ring.
#[derive(Debug)]
pub struct Ring {
    rank: usize,
    world: usize,
    next: Option<TcpStream>,
    prev: Option<TcpStream>,
    bytes_sent: u64,
    /// How long an exchange waits with no byte moving before it gives up.
    timeout: Duration,
    /// Set when the attempt is stopped: a blocked exchange gives up.
    stop: Option<Arc<AtomicBool>>,
}

/// How often a blocked exchange looks at the stop flag.
pub const POLL: Duration = Duration::from_millis(200);

/// Whether an I/O error is a socket timeout (try again) rather than a failure.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Moves `len` bytes with `step` (one `read` or `write` from an offset, returning the
/// bytes moved), waking every [`POLL`] on a socket timeout to see whether to give up:
/// the attempt was stopped, or nothing moved for `timeout`.
fn pump(
    len: usize,
    mut step: impl FnMut(usize) -> io::Result<usize>,
    stop: Option<&AtomicBool>,
    timeout: Duration,
) -> io::Result<()> {
    let (mut at, mut idle) = (0, Instant::now());
    while at < len {
        match step(at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the neighbour closed the connection",
                ));
            }
            Ok(n) => (at, idle) = (at + n, Instant::now()),
            Err(e) if timed_out(&e) => {
                if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        "the attempt was stopped",
                    ));
                }
                if idle.elapsed() >= timeout {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nothing moved for {} s", timeout.as_secs()),
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn handshake(session: u64, rank: usize) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&session.to_le_bytes());
    h[16..24].copy_from_slice(&(rank as u64).to_le_bytes());
    h
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Connections that arrived, by (session, sender's rank), with when they arrived.
type Arrivals = HashMap<(u64, u64), (TcpStream, Instant)>;

/// A process's meeting point for rings: one listening port that every replica this
/// process runs (of any trial, any rank) shares. A connection announces its session and
/// rank; the hub parks it until the replica that expects it asks.
#[derive(Debug)]
pub struct RingHub {
    address: String,
    arrivals: Arc<(Mutex<Arrivals>, Condvar)>,
}

/// How long an unclaimed connection is kept (its replica may start a little later).
const PARK: Duration = Duration::from_secs(120);

impl RingHub {
    /// Listens on `bind` (`HOST:PORT`, port 0 for any) and advertises `advertise:PORT`
    /// to peers (default: the bound address).
    pub fn bind(bind: &str, advertise: Option<&str>) -> io::Result<Arc<Self>> {
        let listener = TcpListener::bind(bind)?;
        let local = listener.local_addr()?;
        let address = match advertise {
            Some(host) => format!("{host}:{}", local.port()),
            None => local.to_string(),
        };
        let arrivals: Arc<(Mutex<Arrivals>, Condvar)> = Arc::default();
        let parked = arrivals.clone();
        std::thread::Builder::new()
            .name("ring-hub".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut s) = stream else { continue };
                    let parked = parked.clone();
                    // Read the handshake off the accepting thread: a silent stranger
                    // must not hold up the others.
                    std::thread::spawn(move || {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        let mut h = [0u8; 24];
                        if s.read_exact(&mut h).is_err() || &h[..8] != MAGIC {
                            return;
                        }
                        let session = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
                        let rank = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
                        let (lock, ready) = &*parked;
                        if let Ok(mut map) = lock.lock() {
                            map.retain(|_, (_, at)| at.elapsed() < PARK);
                            map.insert((session, rank), (s, Instant::now()));
                            ready.notify_all();
                        }
                    });
                }
            })?;
        Ok(Arc::new(Self { address, arrivals }))
    }

    /// The address peers connect to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Joins the ring of `peers` (every replica's hub address, by rank) as `rank`:
    /// connects to the next replica and takes the previous one's connection for
    /// `session` (the attempt's token: connections of other attempts are never taken).
    /// Gives up after `timeout`, or as soon as `cancelled()` holds (polled every 100 ms),
    /// and fails any later exchange whose peer is silent as long.
    pub fn join(
        &self,
        rank: usize,
        peers: &[String],
        session: u64,
        timeout: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> io::Result<Ring> {
        let world = peers.len();
        if rank >= world {
            return Err(invalid(format!("rank {rank} outside a ring of {world}")));
        }
        if world == 1 {
            return Ok(Ring {
                rank,
                world,
                next: None,
                prev: None,
                bytes_sent: 0,
                timeout,
                stop: None,
            });
        }
        let deadline = Instant::now() + timeout;
        let next_addr = resolve(&peers[(rank + 1) % world])?;
        let next = connect(next_addr, session, rank, deadline, cancelled)?;
        let expected = ((rank + world - 1) % world) as u64;
        let (lock, ready) = &*self.arrivals;
        let mut map = lock
            .lock()
            .map_err(|_| invalid("the ring hub's table is poisoned".into()))?;
        let prev = loop {
            if let Some((s, _)) = map.remove(&(session, expected)) {
                break s;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("replica {expected} never connected"),
                ));
            }
            if cancelled() {
                return Err(stopped_while_forming());
            }
            map = ready
                .wait_timeout(map, left.min(Duration::from_millis(100)))
                .map_err(|_| invalid("the ring hub's table is poisoned".into()))?
                .0;
        };
        drop(map);
        Ring::over(rank, world, next, prev, timeout)
    }
}

fn resolve(address: &str) -> io::Result<SocketAddr> {
    address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("{address} resolves to no address")))
}

/// The error of a join given up because the attempt was stopped.
fn stopped_while_forming() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "the attempt was stopped while its ring formed",
    )
}

/// Connects to the next replica, retrying until `deadline` (it may not listen yet, or
/// its worker may be gone: then the attempt is stopped, and so is the retrying).
fn connect(
    to: SocketAddr,
    session: u64,
    rank: usize,
    deadline: Instant,
    cancelled: &dyn Fn() -> bool,
) -> io::Result<TcpStream> {
    loop {
        match TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
            Ok(mut s) => {
                s.write_all(&handshake(session, rank))?;
                return Ok(s);
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) if cancelled() => return Err(stopped_while_forming()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Ring {
    fn over(
        rank: usize,
        world: usize,
        next: TcpStream,
        prev: TcpStream,
        timeout: Duration,
    ) -> io::Result<Self> {
        for s in [&next, &prev] {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(POLL.min(timeout)))?;
            s.set_write_timeout(Some(POLL.min(timeout)))?;
        }
        Ok(Self {
            rank,
            world,
            next: Some(next),
            prev: Some(prev),
            bytes_sent: 0,
            timeout,
            stop: None,
        })
    }

    /// Makes a blocked exchange give up once `flag` is set (the attempt was stopped).
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// This replica's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Replicas in the ring.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Bytes this replica has sent to the next one.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Sums `values` element-wise across the ring, in place.
    pub fn all_reduce(&mut self, values: &mut [f32]) -> io::Result<()> {
        let (Some(next), Some(prev)) = (self.next.as_mut(), self.prev.as_mut()) else {
            return Ok(());
        };
        let k = self.world;
        let n = values.len();
        let bounds = |c: usize| (c * n / k, (c + 1) * n / k);
        let mut out = Vec::new();
        let mut inbox = Vec::new();
        for phase in 0..2 {
            for t in 0..k - 1 {
                // Reduce-scatter sends chunk rank − t; all-gather sends rank + 1 − t.
                let send = (self.rank + phase + k - t) % k;
                let recv = (self.rank + phase + 2 * k - t - 1) % k;
                let (lo, hi) = bounds(send);
                out.clear();
                out.extend(values[lo..hi].iter().flat_map(|v| v.to_le_bytes()));
                let (rlo, rhi) = bounds(recv);
                inbox.resize((rhi - rlo) * 4, 0);
                let (stop, timeout) = (self.stop.as_deref(), self.timeout);
                let sent = std::thread::scope(|scope| {
                    let sender =
                        scope.spawn(|| pump(out.len(), |at| next.write(&out[at..]), stop, timeout));
                    let len = inbox.len();
                    let got = pump(len, |at| prev.read(&mut inbox[at..]), stop, timeout);
                    let sent = sender.join().expect("the sending thread does not panic");
                    got.and(sent)
                });
                sent?;
                self.bytes_sent += out.len() as u64;
                for (v, b) in values[rlo..rhi].iter_mut().zip(inbox.chunks_exact(4)) {
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if phase == 0 {
                        *v += x;
                    } else {
                        *v = x;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs `f(rank, ring)` for `k` replicas on threads of this process, each with its own
/// hub on loopback: for tests and single-machine experiments.
pub fn on_loopback<T: Send>(k: usize, session: u64, f: impl Fn(usize, Ring) -> T + Sync) -> Vec<T> {
    let hubs: Vec<Arc<RingHub>> = (0..k)
        .map(|_| RingHub::bind("127.0.0.1:0", None).expect("a loopback port"))
        .collect();
    let peers: Vec<String> = hubs.iter().map(|h| h.address().to_owned()).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = hubs
            .iter()
            .enumerate()
            .map(|(rank, hub)| {
                let (peers, f) = (&peers, &f);
                scope.spawn(move || {
                    let ring = hub
                        .join(rank, peers, session, Duration::from_secs(30), &|| false)
                        .expect("replicas on loopback join their ring");
                    f(rank, ring)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a replica thread does not panic"))
            .collect()
    })
}

impl Reducer for Ring {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<(), String> {
        self.all_reduce(values).map_err(|e| {
            format!(
                "replica {} of {}: a neighbour in the ring failed: {e}",
                self.rank, self.world
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sums_are_exact_and_identical_on_every_replica() {
        for k in [1, 2, 3, 4] {
            // Lengths shorter than, equal to and longer than the ring, uneven chunks.
            for n in [1, 3, 4, 1001] {
                let results = on_loopback(k, 7, |rank, mut ring| {
                    let mut v: Vec<f32> = (0..n).map(|i| (i * (rank + 1)) as f32).collect();
                    ring.all_reduce(&mut v).unwrap();
                    (v, ring.bytes_sent())
                });
                let factor: usize = (1..=k).sum();
                let want: Vec<f32> = (0..n).map(|i| (i * factor) as f32).collect();
                for (v, bytes) in &results {
                    assert_eq!(v, &want, "k {k} n {n}");
                    // Each replica sends 2(k − 1) chunks of about n/k floats.
                    let expected = 2.0 * (k as f64 - 1.0) / k as f64 * n as f64 * 4.0;
                    assert!(
                        (*bytes as f64 - expected).abs() <= 8.0 * k as f64,
                        "{bytes} {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_dead_neighbour_is_an_error_not_a_hang() {
        let results = on_loopback(3, 7, |rank, mut ring| {
            if rank == 2 {
                drop(ring); // replica 2 dies before the exchange
                return None;
            }
            let mut v = vec![1.0f32; 300];
            Some(ring.all_reduce_sum(&mut v))
        });
        for r in results.into_iter().flatten() {
            let e = r.unwrap_err();
            assert!(e.contains("neighbour in the ring failed"), "{e}");
        }
    }

    #[test]
    fn a_stopped_replica_leaves_an_exchange_with_a_silent_neighbour_at_once() {
        // Replica 1 stays connected but never exchanges (as if cut off); replica 0's
        // attempt is stopped 300 ms into the exchange: it gives up then, not after the
        // ring's 30 s timeout.
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let done_rx = Mutex::new(done_rx);
        let results = on_loopback(2, 8, |rank, mut ring| {
            if rank == 1 {
                let _ = done_rx.lock().unwrap().recv();
                return None;
            }
            ring.stop_on(stop.clone());
            let flag = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                flag.store(true, Ordering::Relaxed);
            });
            let t = Instant::now();
            let mut v = vec![1.0f32; 1_000_000];
            let r = ring.all_reduce(&mut v);
            let _ = done_tx.send(());
            Some((r, t.elapsed()))
        });
        let (r, took) = results[0].as_ref().unwrap();
        assert_eq!(r.as_ref().unwrap_err().kind(), io::ErrorKind::Interrupted);
        assert!(*took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn a_connection_from_another_session_is_not_taken() {
        let hub = RingHub::bind("127.0.0.1:0", None).unwrap();
        let other = RingHub::bind("127.0.0.1:0", Some("127.0.0.1")).unwrap();
        assert!(other.address().starts_with("127.0.0.1:"));
        let peers = [hub.address().to_owned(), other.address().to_owned()];
        // A stranger (session 8) connects as rank 1; rank 0 of session 7 must not take it.
        let mut s = TcpStream::connect(hub.address()).unwrap();
        s.write_all(&handshake(8, 1)).unwrap();
        let e = hub
            .join(0, &peers, 7, Duration::from_millis(600), &|| false)
            .unwrap_err();
        assert!(e.to_string().contains("replica 1 never connected"), "{e}");
        // A stopped attempt stops waiting long before the timeout.
        let t = Instant::now();
        let e = hub
            .join(0, &peers, 9, Duration::from_secs(30), &|| {
                t.elapsed() > Duration::from_millis(200)
            })
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        assert!(t.elapsed() < Duration::from_secs(5));
        // So does one whose next replica's worker is gone (nothing listens there).
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = [
            hub.address().to_owned(),
            gone.local_addr().unwrap().to_string(),
        ];
        drop(gone);
        let t = Instant::now();
        let e = hub
            .join(0, &dead, 10, Duration::from_secs(30), &|| {
                t.elapsed() > Duration::from_millis(200)
            })
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn two_rings_share_one_hub() {
        // Two sessions, each a ring of 2 over the same two hubs, joined concurrently.
        let hubs = [
            RingHub::bind("127.0.0.1:0", None).unwrap(),
            RingHub::bind("127.0.0.1:0", None).unwrap(),
        ];
        let peers: Vec<String> = hubs.iter().map(|h| h.address().to_owned()).collect();
        let sums: Vec<f32> = std::thread::scope(|scope| {
            let handles: Vec<_> = [(1u64, 0usize), (1, 1), (2, 0), (2, 1)]
                .into_iter()
                .map(|(session, rank)| {
                    let (hubs, peers) = (&hubs, &peers);
                    scope.spawn(move || {
                        let mut ring = hubs[rank]
                            .join(rank, peers, session, Duration::from_secs(10), &|| false)
                            .unwrap();
                        let mut v = vec![session as f32 * 10.0 + rank as f32];
                        ring.all_reduce(&mut v).unwrap();
                        v[0]
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(sums, vec![21.0, 21.0, 41.0, 41.0]);
    }
}
