//! Ring all-reduce over TCP between the replicas of a data-parallel trial.
//!
//! The K replicas form a ring: each connects to the next and accepts the previous. A sum
//! of n floats takes K − 1 reduce-scatter steps (each replica passes one n/K chunk on and
//! adds the chunk it receives) and K − 1 all-gather steps (the finished chunks travel
//! round), so every replica sends 2·(K − 1)/K · n floats per exchange whatever K is, and
//! all replicas end with bit-identical sums: each chunk is summed once, on one replica,
//! and copied to the others.
//!
//! A peer that dies or is cut off makes the exchange fail with an error after the read
//! timeout instead of hanging the others.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

impl Ring {
    /// Joins the ring of `peers` (every replica's listening address, by rank) as `rank`,
    /// listening on `listener` (bound to `peers[rank]`). `session` names the trial's
    /// attempt: a connection from another session is refused. Gives up after `timeout`
    /// and fails any later exchange whose peer is silent that long.
    pub fn join(
        rank: usize,
        peers: &[SocketAddr],
        listener: &TcpListener,
        session: u64,
        timeout: Duration,
    ) -> io::Result<Self> {
        let world = peers.len();
        if rank >= world {
            return Err(invalid(format!("rank {rank} outside a ring of {world}")));
        }
        if world == 1 {
            return Ok(Self {
                rank,
                world,
                next: None,
                prev: None,
                bytes_sent: 0,
            });
        }
        let deadline = Instant::now() + timeout;
        let next_addr = peers[(rank + 1) % world];
        let expected_prev = (rank + world - 1) % world;
        // Connect to the next replica from another thread while accepting the previous
        // one here: every replica does both, so neither may wait for the other.
        let (next, prev) = std::thread::scope(|scope| {
            let connect = scope.spawn(|| -> io::Result<TcpStream> {
                loop {
                    match TcpStream::connect_timeout(&next_addr, Duration::from_millis(500)) {
                        Ok(mut s) => {
                            s.write_all(&handshake(session, rank))?;
                            return Ok(s);
                        }
                        Err(e) if Instant::now() >= deadline => return Err(e),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
            let prev = (|| -> io::Result<TcpStream> {
                listener.set_nonblocking(true)?;
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            s.set_nonblocking(false)?;
                            s.set_read_timeout(Some(timeout))?;
                            let mut h = [0u8; 24];
                            s.read_exact(&mut h)?;
                            if h == handshake(session, expected_prev) {
                                return Ok(s);
                            }
                            // A stale attempt or a stranger: drop it and keep waiting.
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if Instant::now() >= deadline {
                                return Err(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    format!("replica {expected_prev} never connected"),
                                ));
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => return Err(e),
                    }
                }
            })();
            let next = connect
                .join()
                .expect("the connecting thread does not panic");
            (next, prev)
        });
        let (next, prev) = (next?, prev?);
        for s in [&next, &prev] {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
        }
        Ok(Self {
            rank,
            world,
            next: Some(next),
            prev: Some(prev),
            bytes_sent: 0,
        })
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
                let sent = std::thread::scope(|scope| {
                    let sender = scope.spawn(|| next.write_all(&out));
                    let got = prev.read_exact(&mut inbox);
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

/// Runs `f(rank, ring)` for `k` replicas on threads of this process, joined by a ring on
/// loopback: for tests and single-machine experiments.
pub fn on_loopback<T: Send>(k: usize, session: u64, f: impl Fn(usize, Ring) -> T + Sync) -> Vec<T> {
    let listeners: Vec<TcpListener> = (0..k)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a loopback port"))
        .collect();
    let peers: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address"))
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(rank, l)| {
                let (peers, f) = (&peers, &f);
                scope.spawn(move || {
                    let ring = Ring::join(rank, peers, l, session, Duration::from_secs(30))
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
    fn a_connection_from_another_session_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let peers = [listener.local_addr().unwrap(), other.local_addr().unwrap()];
        // A stranger (session 8) connects as rank 1; rank 0 of session 7 must not take it.
        let mut s = TcpStream::connect(peers[0]).unwrap();
        s.write_all(&handshake(8, 1)).unwrap();
        let e = Ring::join(0, &peers, &listener, 7, Duration::from_millis(600)).unwrap_err();
        assert!(e.to_string().contains("replica 1 never connected"), "{e}");
    }
}
